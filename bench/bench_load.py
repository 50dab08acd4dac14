"""Load on the edge of a real ``cuecard serve`` on loopback, bounded in count and time
(about 2 minutes with the defaults):

A. ``--connections`` WebSocket connections opened and closed over ``--connect-s`` (a third
   each: a viewer with the token of a call that never starts, ``?wait_s=1``, closed 4404; no
   token, refused; a bad call id, refused), with ``--half-open`` TCP connections that never
   send a request head among them (each must be closed by the server's handshake timeout).
B. A reconnect storm on one live call (an espeak-ng call streamed at 1.0x by the simulator):
   ``--steady`` viewers watch it throughout; after ``--quiet-s`` of the call, ``--viewers``
   viewers disconnect and reconnect with ``?after_seq=`` for ``--storm-s`` (each connection
   held 0.2-2 s), while ``--never-read`` upgrades to the same call's events never read a byte
   (the server must let go of each once the call ends: ``/proc/net/tcp`` shows whether it
   still holds its end).

Measured, after a warm-up (a short call streamed as fast as the server takes it): the
server's RSS (``/proc/<pid>/status`` VmRSS) at baseline, its peak in each phase
and after (it must come back within 10 % of the baseline); asyncio tasks in the server
(``GET /v1/stats``) before and after; per phase, what each connection got; on the events
socket, the added latency: events carry no send time, so for each stored event (``seq``) the
delivery lag of a steady viewer is its receive time minus the earliest receive time of that
event by any steady viewer or the simulator's socket, and the figure is its p99 during the
storm minus its p99 before it; the finals' latency (receive time minus the utterance's end in
the call's audio, 1.0x) before and during the storm; and whether every storm viewer got
every stored event exactly once across its reconnects.

Everything (the server, its Whisper thread, the simulator, the hundreds of clients) shares the
machine's cores, so latencies include waiting for CPU in this process as well as the server.

    python -m bench.bench_load [--connections 1000] [--viewers 200] [--json OUT] ...

Prints a Markdown table; writes the JSON to bench/results/load-<time>.json (or ``--json``).
Longer than most modules (about 500 lines): the phases, their clients and their measures are
one load test, and read best in one file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets

from clients.callgen import DEMO_CALL, Turn, render
from clients.localserver import REPO, ServerProcess, start_server, stop_server
from clients.simulator import SimOptions, simulate

RESULTS = REPO / "bench" / "results"
CLOSE_TIMEOUT_S = 10.0  # uvicorn's, after which the server aborts a close nobody reads
VIEWER_SEND_TIMEOUT_S = 10.0  # the server's default CUECARD_VIEWER_SEND_TIMEOUT_S
SHORT_CALL = (
    Turn("rep", "Hi, this is Sam from Acme. Thanks for taking the time today."),
    Turn("customer", "Sure. Honestly the price is too high for us right now."),
)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    connections: int = 1000
    connect_s: float = 60.0
    half_open: int = 100
    viewers: int = 200
    steady: int = 5
    quiet_s: float = 12.0
    storm_s: float = 25.0
    never_read: int = 50
    short_call: bool = False  # two turns (about 10 s) instead of the 52 s demo call
    handshake_timeout_s: float = 10.0
    settle_s: float = 5.0

    def __post_init__(self) -> None:
        if min(self.connections, self.viewers, self.steady, self.half_open, self.never_read) < 1:
            raise ValueError("every count must be >= 1")


@dataclass
class Rss:
    """VmRSS of one process, sampled in the background, by phase."""

    pid: int
    phase: str = "baseline"
    peaks_mb: dict[str, float] = field(default_factory=dict)

    def now_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    async def sample(self) -> None:
        while True:
            mb = self.now_mb()
            self.peaks_mb[self.phase] = max(self.peaks_mb.get(self.phase, 0.0), mb)
            await asyncio.sleep(0.2)


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 4) if xs else None


async def server_tasks(srv: ServerProcess) -> int:
    async with httpx.AsyncClient(base_url=srv.http) as c:
        r = await c.get("/v1/stats", headers={"Authorization": f"Bearer {srv.token}"})
        r.raise_for_status()
        return int(r.json()["tasks"])


# Phase A: connections opened and closed, and half-open TCP connections


async def one_connection(srv: ServerProcess, i: int) -> tuple[str, str, float | None]:
    """One socket of the mix: (kind, what it got, handshake seconds)."""
    kind = ("viewer", "no_token", "bad_call_id")[i % 3]
    call = f"never-{i}" if kind != "bad_call_id" else "x" * 200
    headers = {} if kind == "no_token" else srv.auth
    t = time.monotonic()
    try:
        url = f"{srv.ws}/v1/calls/{call}/events?wait_s=1"
        async with websockets.connect(url, additional_headers=headers) as ws:
            handshake_s = time.monotonic() - t
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(30):
                    await ws.recv()
                return kind, "an unexpected message", handshake_s
            return kind, f"closed {ws.close_code}", handshake_s
    except websockets.InvalidStatus as err:
        return kind, f"HTTP {err.response.status_code}", time.monotonic() - t
    except (OSError, TimeoutError, websockets.WebSocketException) as err:
        return kind, f"error {type(err).__name__}", None


async def half_open(srv: ServerProcess, guard_s: float) -> float | None:
    """A TCP connection that sends nothing: seconds until the server closes it (None: not
    within ``guard_s``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    t = time.monotonic()
    try:
        async with asyncio.timeout(guard_s):
            await reader.read()
        return round(time.monotonic() - t, 3)
    except (TimeoutError, ConnectionError):
        return None
    finally:
        writer.close()


async def phase_connections(srv: ServerProcess, o: LoadOptions) -> dict[str, Any]:
    async def at(delay_s: float, make: Any) -> Any:
        await asyncio.sleep(delay_s)
        return await make()

    step_s = o.connect_s / o.connections
    sockets = [at(i * step_s, lambda i=i: one_connection(srv, i)) for i in range(o.connections)]
    guard_s = o.handshake_timeout_s + 20
    halves = [
        at(i * o.connect_s / o.half_open, lambda: half_open(srv, guard_s))
        for i in range(o.half_open)
    ]
    t = time.monotonic()
    got = await asyncio.gather(*sockets, *halves)
    outcomes: dict[str, dict[str, int]] = {}
    handshakes = []
    for kind, outcome, handshake_s in got[: o.connections]:
        outcomes.setdefault(kind, {}).setdefault(outcome, 0)
        outcomes[kind][outcome] += 1
        if handshake_s is not None:
            handshakes.append(handshake_s)
    closes = [s for s in got[o.connections :] if s is not None]
    return {
        "connections": o.connections,
        "wall_s": round(time.monotonic() - t, 1),
        "outcomes": outcomes,
        "errors": sum(n for k in outcomes.values() for w, n in k.items() if w.startswith("error")),
        "handshake_p50_s": pct(handshakes, 50),
        "handshake_p99_s": pct(handshakes, 99),
        "half_open": o.half_open,
        "half_open_closed_by_server": len(closes),
        "half_open_close_p50_s": pct(closes, 50),
        "half_open_close_max_s": round(max(closes), 3) if closes else None,
    }


# Phase B: a live call, steady viewers, a reconnect storm, upgrades that never read


@dataclass
class Watch:
    """What the steady viewers and the simulator received: receive times by seq."""

    first: dict[int, float] = field(default_factory=dict)  # seq -> earliest receive
    steady: list[tuple[int, float]] = field(default_factory=list)  # (seq, receive) per viewer
    finals: list[tuple[float, float]] = field(default_factory=list)  # (receive, audio end)
    seqs: set[int] = field(default_factory=set)

    def saw(self, event: dict[str, Any], at: float, steady: bool) -> None:
        if isinstance(seq := event.get("seq"), int):
            self.first[seq] = min(self.first.get(seq, at), at)
            self.seqs.add(seq)
            if steady:
                self.steady.append((seq, at))
        if steady and event.get("type") == "transcript" and event.get("is_final"):
            self.finals.append((at, float(event["end_s"])))


async def steady_viewer(srv: ServerProcess, call_id: str, watch: Watch) -> None:
    url = f"{srv.ws}/v1/calls/{call_id}/events"
    async with websockets.connect(url, additional_headers=srv.auth) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                watch.saw(json.loads(raw), time.monotonic(), steady=True)


@dataclass
class StormViewer:
    seen: list[int] = field(default_factory=list)
    connections: int = 0
    refused: int = 0
    errors: int = 0


async def storm_viewer(
    srv: ServerProcess, call_id: str, until: float, rng: random.Random
) -> StormViewer:
    me = StormViewer()
    while time.monotonic() < until:
        after = max(me.seen, default=0)
        url = f"{srv.ws}/v1/calls/{call_id}/events?after_seq={after}"
        hold_s = rng.uniform(0.2, 2.0)
        try:
            async with websockets.connect(url, additional_headers=srv.auth) as ws:
                me.connections += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(hold_s, max(0.0, until - time.monotonic()))):
                        async for raw in ws:
                            if isinstance(seq := json.loads(raw).get("seq"), int):
                                me.seen.append(seq)
                        return me  # the server closed it normally: the call ended
        except websockets.ConnectionClosed as err:  # refused (1013) or cut off
            if err.rcvd is not None and err.rcvd.code == 1013:
                me.refused += 1
            else:
                me.errors += 1
            await asyncio.sleep(0.2)
        except (OSError, TimeoutError, websockets.WebSocketException):
            me.errors += 1
            await asyncio.sleep(0.2)
    return me


async def never_reading(srv: ServerProcess, call_id: str) -> socket.socket:
    """An upgrade to the call's events with small buffers that reads only the 101."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", srv.port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    head = (
        f"GET /v1/calls/{call_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {srv.token}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, head.encode())
    got = b""
    while b"\r\n\r\n" not in got:
        async with asyncio.timeout(30):
            got += await loop.sock_recv(sock, 1)
    return sock


def server_holds(sock: socket.socket, server_port: int) -> bool:
    """Whether the server process still holds the other end of ``sock``: its socket is in
    /proc/net/tcp with an inode. Once the process closes it, a socket whose peer reads nothing
    lingers as a kernel orphan (inode 0) flushing to a zero window, or is gone; the peer's own
    state cannot tell (its FIN waits behind the data it does not read)."""
    ours = sock.getsockname()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        local, remote, inode = cols[1], cols[2], cols[9]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == ours:
            return inode != "0"
    return False


async def released(
    socks: list[socket.socket], server_port: int, guard_s: float
) -> tuple[int, float | None]:
    """Wait until the server process has let go of every socket, at most ``guard_s``; (how
    many it still holds, seconds until it let go of the last)."""
    t = time.monotonic()
    while (held := sum(server_holds(s, server_port) for s in socks)) and (  # noqa: ASYNC110
        time.monotonic() - t < guard_s
    ):
        await asyncio.sleep(0.25)
    for s in socks:
        s.close()
    return held, None if held else round(time.monotonic() - t, 1)


async def phase_storm(
    srv: ServerProcess, o: LoadOptions, wav: Path, audio_s: float, rss: Rss
) -> dict[str, Any]:
    call_id = "load-call"
    watch = Watch()
    steady = [asyncio.create_task(steady_viewer(srv, call_id, watch)) for _ in range(o.steady)]
    await asyncio.sleep(1.0)  # connected before the call starts: no history to catch up on
    t0: list[float] = []

    def on_event(e: dict[str, Any]) -> None:
        now = time.monotonic()
        if not t0:
            t0.append(now - float(e.get("received_s", 0.0)))
        watch.saw(e, now, steady=False)

    options = SimOptions(server=srv.ws, token=srv.token, speed=1.0, call_id=call_id)
    call = asyncio.create_task(simulate(wav, options, on_event))
    await asyncio.sleep(o.quiet_s)
    rss.phase = "storm"
    storm_start = time.monotonic()
    until = storm_start + o.storm_s
    rngs = [random.Random(i) for i in range(o.viewers)]
    storm = [asyncio.create_task(storm_viewer(srv, call_id, until, r)) for r in rngs]
    unread = [await never_reading(srv, call_id) for _ in range(o.never_read)]
    viewers = await asyncio.gather(*storm)
    storm_end = time.monotonic()
    rss.phase = "call end"
    await call
    await asyncio.gather(*steady)
    guard_s = VIEWER_SEND_TIMEOUT_S + CLOSE_TIMEOUT_S + 10
    held, last_close_s = await released(unread, srv.port, guard_s)
    base = t0[0] if t0 else storm_start
    quiet = (base, storm_start)
    stormy = (storm_start, storm_end)
    return {
        "call_audio_s": round(audio_s, 1),
        "stored_events": len(watch.seqs),
        "steady_viewers": o.steady,
        "storm_viewers": o.viewers,
        "storm_s": round(storm_end - storm_start, 1),
        "storm_connections": sum(v.connections for v in viewers),
        "storm_refused_1013": sum(v.refused for v in viewers),
        "storm_errors": sum(v.errors for v in viewers),
        "storm_duplicates": sum(len(v.seen) - len(set(v.seen)) for v in viewers),
        "storm_missed": sum(missed(v, watch.seqs) for v in viewers),
        **latency(watch, quiet, stormy, base),
        "never_read": o.never_read,
        "never_read_held_open": held,
        "never_read_all_closed_after_call_end_s": last_close_s,
    }


def missed(v: StormViewer, seqs: set[int]) -> int:
    """Stored events up to the last one this viewer saw that it never got."""
    top = max(v.seen, default=0)
    return len({s for s in seqs if s <= top} - set(v.seen))


def latency(
    watch: Watch, quiet: tuple[float, float], storm: tuple[float, float], base: float
) -> dict[str, Any]:
    def lags(window: tuple[float, float]) -> list[float]:
        return [at - watch.first[s] for s, at in watch.steady if window[0] <= at < window[1]]

    def finals(window: tuple[float, float]) -> list[float]:
        return [at - (base + end_s) for at, end_s in watch.finals if window[0] <= at < window[1]]

    q, s = lags(quiet), lags(storm)
    q99, s99 = pct(q, 99), pct(s, 99)
    return {
        "delivery_lag_quiet": {"n": len(q), "p50_s": pct(q, 50), "p99_s": q99},
        "delivery_lag_storm": {"n": len(s), "p50_s": pct(s, 50), "p99_s": s99},
        "added_p99_s": round(s99 - q99, 4) if q99 is not None and s99 is not None else None,
        "final_latency_quiet": summary(finals(quiet)),
        "final_latency_storm": summary(finals(storm)),
    }


def summary(xs: list[float]) -> dict[str, Any]:
    return {"n": len(xs), "p50_s": pct(xs, 50), "max_s": round(max(xs), 3) if xs else None}


async def run(o: LoadOptions) -> dict[str, Any]:
    cap = o.viewers + o.steady + o.never_read + 10
    env = {
        "CUECARD_MAX_VIEWERS_PER_CALL": str(cap),
        "CUECARD_MAX_VIEWERS": str(max(1000, cap)),
        "CUECARD_HANDSHAKE_TIMEOUT_S": str(o.handshake_timeout_s),
    }
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "load-call.wav"
        call = render(SHORT_CALL if o.short_call else DEMO_CALL)
        call.write(wav)
        srv = start_server(Path(tmp) / "data", **env)
        try:
            return await measure(srv, o, wav, call.duration_s)
        finally:
            stop_server(srv)


async def measure(srv: ServerProcess, o: LoadOptions, wav: Path, audio_s: float) -> dict[str, Any]:
    # Warm up: every kind of socket once and one short call streamed as fast as the server
    # takes it, so that what a first call starts for good (the ASR scheduler's task, the
    # models' buffers) is in the baseline, not counted as a leak.
    for i in range(3):
        await one_connection(srv, i)
    warm = wav.with_name("warm-up.wav")
    render(SHORT_CALL).write(warm)
    await simulate(warm, SimOptions(server=srv.ws, token=srv.token, speed=0, call_id="warm-up"))
    await asyncio.sleep(1.0)
    rss = Rss(srv.proc.pid)
    baseline_mb, tasks_before = rss.now_mb(), await server_tasks(srv)
    sampler = asyncio.create_task(rss.sample())
    try:
        rss.phase = "connections"
        connections = await phase_connections(srv, o)
        rss.phase = "quiet call"
        storm = await phase_storm(srv, o, wav, audio_s, rss)
        rss.phase = "after"
        await asyncio.sleep(o.settle_s)
        after_mb, tasks_after = rss.now_mb(), await server_tasks(srv)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return {
        "options": asdict(o),
        "load_average": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "rss_mb": {
            "baseline": round(baseline_mb, 1),
            **{f"peak_{k.replace(' ', '_')}": round(v, 1) for k, v in rss.peaks_mb.items()},
            "after": round(after_mb, 1),
            "after_vs_baseline_pct": round(100 * (after_mb / baseline_mb - 1), 1),
            "within_10_pct": after_mb <= 1.10 * baseline_mb,
        },
        "tasks": {
            "before": tasks_before,
            "after": tasks_after,
            "leaked": tasks_after - tasks_before,
        },
        "connections": connections,
        "storm": storm,
    }


def markdown(r: dict[str, Any]) -> str:
    c, s, m, t = r["connections"], r["storm"], r["rss_mb"], r["tasks"]
    rows = [
        ("connections opened and closed", f"{c['connections']} in {c['wall_s']} s; errors {c['errors']}"),
        ("what they got", "; ".join(f"{k}: {v}" for k, v in c["outcomes"].items())),
        ("handshake p50 / p99", f"{c['handshake_p50_s']} / {c['handshake_p99_s']} s"),
        ("half-open TCP closed by the server", f"{c['half_open_closed_by_server']}/{c['half_open']}, "
         f"after p50 {c['half_open_close_p50_s']} s, max {c['half_open_close_max_s']} s"),
        ("storm", f"{s['storm_viewers']} viewers, {s['storm_connections']} connections in "
         f"{s['storm_s']} s; refused {s['storm_refused_1013']}, errors {s['storm_errors']}"),
        ("storm: duplicates / missed events", f"{s['storm_duplicates']} / {s['storm_missed']}"),
        ("delivery lag p99 quiet / storm (added)", f"{s['delivery_lag_quiet']['p99_s']} / "
         f"{s['delivery_lag_storm']['p99_s']} s ({s['added_p99_s']} s)"),
        ("final latency p50 quiet / storm", f"{s['final_latency_quiet']['p50_s']} / "
         f"{s['final_latency_storm']['p50_s']} s"),
        ("never-read upgrades the server still held", f"{s['never_read_held_open']}/"
         f"{s['never_read']} (all closed {s['never_read_all_closed_after_call_end_s']} s after "
         "the call ended)"),
        ("RSS baseline / peaks / after", f"{m['baseline']} / "
         + ", ".join(f"{k[5:]} {v}" for k, v in m.items() if k.startswith("peak_"))
         + f" / {m['after']} MB ({m['after_vs_baseline_pct']:+} %)"),
        ("server tasks before / after", f"{t['before']} / {t['after']} (leaked {t['leaked']})"),
        ("load average (1, 5, 15 min)", ", ".join(f"{x:.2f}" for x in r["load_average"])),
    ]  # fmt: skip
    return "\n".join(["| figure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def parse(argv: list[str] | None = None) -> tuple[LoadOptions, Path | None]:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_load", description=__doc__.splitlines()[0]
    )
    d = LoadOptions()
    for name in ("connections", "half_open", "viewers", "steady", "never_read"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("connect_s", "quiet_s", "storm_s", "handshake_timeout_s", "settle_s"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    p.add_argument("--short-call", action="store_true", help="a 10 s call instead of 52 s")
    p.add_argument("--json", type=Path, help="where to write the JSON (default bench/results/)")
    a = vars(p.parse_args(argv))
    out = a.pop("json")
    return LoadOptions(**a), out


def main(argv: list[str] | None = None) -> None:
    options, out = parse(argv)
    report = asyncio.run(run(options))
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
