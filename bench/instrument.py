"""The benchmark as the product's instrument: ``python -m bench`` (``run_bench``).

Renders the call set (``bench.callset``), starts a real ``cuecard serve`` on a free loopback
port (``clients.localserver``), and for each concurrency level N replays N calls at once at
1.0x (call i starts ``i * stagger_s`` after the first, cycling through the set) over the
native protocol or, with ``telephone``, as Twilio Media Streams (8 kHz mu-law). Per level, by
REFERENCE.md's definitions (``bench.metrics``; the first 5 s of each call excluded):

- final, first-partial, card (customer cards) and insight-stage latency: n, p50, p95, mean, max;
- transcript lag over time: final latency against wall time; ``growing`` when its trend
  (``bench.metrics.lag_growth``) rises more than 0.2 s from the level's first final to its last;
- RTF per stage: every ``*_busy_s`` counter of ``GET /v1/stats`` (the Whisper workers, in worker-seconds: ``asr``)
  per second of call audio; the VAD's, measured in this process on the first call
  (``vad_offline``); the server's CPU seconds per audio second;
- the server process's CPU (cores busy) and RSS (``bench.host.ProcWatch``), and this process's
  CPU (the simulators share the machine);
- dropped work: every ``*dropped*`` counter of ``/v1/stats``, scripted turns that got no
  final, calls whose events socket closed abnormally;
- streamed vs offline WER (``bench.realspeech.edits``): the streamed finals, and the same
  model's offline 30 s decode of each whole channel (``bench.bench_real.offline``, cached), of
  the audio the server heard (telephone-degraded on the 8 kHz path);
- objection turns of the scripted calls that got a right card on screen (issued, or a card
  of that kind updated to quote the turn, or confirmed on it; ``carded_objections``).

``capacity`` searches the largest N within the targets (final p95 <= 0.8 s, card p95 <= 1.0 s,
no growing lag): N doubles from 1 until a level fails, then bisects. Its calls are chained
(``chain``: several calls of the set back to back, rotated per copy), so a backlog has minutes
to show. The outputs
(``bench.report``) land in ``out_dir/<stamp>/``: report.json, report.md, the PNG plots and
the events received (events.jsonl).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.bar import Bar
from bench.callset import BenchCall, chained, real_call, scripted_set
from bench.host import ProcWatch, machine
from bench.metrics import (
    KINDS,
    WARMUP_S,
    lag_growth,
    latency_samples,
    rate_limited_cards,
    server_stats,
    summary,
)
from clients.simulator import SimOptions, SimResult, simulate

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Targets:
    final_p95_s: float = 0.8
    card_p95_s: float = 1.0
    lag_growth_s: float = 0.2


@dataclass(frozen=True, slots=True)
class BenchOptions:
    quick: bool = False
    levels: tuple[int, ...] = (2,)
    capacity: bool = False
    max_calls: int = 16
    model: str = "tiny.en"
    telephone: bool = False  # Twilio Media Streams, 8 kHz mu-law
    stagger_s: float = 1.3
    real: tuple[Path, ...] = ()
    scripted: bool = True  # the espeak-ng set; False: only ``real`` (or the calls given)
    chain: int = 1  # calls of the set played back to back as one replayed call
    out_dir: Path = RESULTS
    targets: Targets = field(default_factory=Targets)
    command: str = "python -m bench"  # shown with the figures
    readme: Path | None = None  # --readme: the README whose bench block gets the report

    def __post_init__(self) -> None:
        if not self.levels or min(self.levels) < 1:
            raise ValueError("levels must be one or more call counts >= 1")
        if self.max_calls < 1 or self.stagger_s < 0 or self.chain < 1:
            raise ValueError("max_calls and chain must be >= 1, stagger_s >= 0")


@dataclass(slots=True)
class LevelRun:
    """What one level's replay left: each call's set index, start offset and result."""

    calls: int
    runs: list[tuple[int, float, SimResult]]
    wall_s: float
    stats: dict[str, float]  # /v1/stats counters: after minus before
    server: dict[str, float]
    client_cpu_cores: float


async def replay_level(
    server: Any, files: Sequence[Path], calls: Sequence[BenchCall], n: int,
    opts: BenchOptions, bar: Bar,
) -> LevelRun:  # fmt: skip
    """N calls at once at 1.0x, staggered, while the server process is watched."""
    t0 = time.monotonic()

    async def one(i: int) -> tuple[int, float, SimResult]:
        await asyncio.sleep(i * opts.stagger_s)
        k = i % len(calls)
        sim = SimOptions(
            server=server.ws, token=server.token, speed=1.0, twilio=opts.telephone,
            call_id=f"bench-{n}-{i}-{os.getpid()}",
        )  # fmt: skip
        offset = time.monotonic() - t0
        return k, offset, await simulate(files[k], sim)

    expected_s = max(i * opts.stagger_s + calls[i % len(calls)].audio_s for i in range(n))

    async def progress() -> None:
        while True:
            bar.show(f"{n} calls at once", (time.monotonic() - t0) / (expected_s + 2))
            await asyncio.sleep(0.5)

    before, cpu0 = server_stats(server), _own_cpu_s()
    watch = ProcWatch(server.proc.pid)
    ticker = asyncio.create_task(progress())
    try:
        async with watch.watching():
            runs = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        ticker.cancel()
    wall = time.monotonic() - t0
    after = server_stats(server)
    stats = {k: round(after[k] - before.get(k, 0.0), 4) for k in after if k != "live_calls"}
    audio_s = sum(calls[k].audio_s for k, _, _ in runs)
    return LevelRun(
        n, list(runs), wall, stats, watch.figures(audio_s), (_own_cpu_s() - cpu0) / wall
    )


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def level_figures(run: LevelRun, calls: Sequence[BenchCall], opts: BenchOptions) -> dict[str, Any]:
    """Every latency, lag, load and drop figure of one level (WER comes later)."""
    samples: dict[str, list[list[float]]] = {k: [] for k in KINDS}
    missing, abnormal, waited = 0, 0, 0
    for k, offset, res in run.runs:
        call = calls[k]
        for s in latency_samples(res.events, call.call.utterances):
            samples[s.kind].append([round(offset + s.received_s, 3), round(s.latency_s, 4)])
        missing += _turns_without_final(res.events, call)
        waited += rate_limited_cards(res.events)
        abnormal += res.close_code not in (None, 1000)
    audio_s = sum(calls[k].audio_s for k, _, _ in run.runs)
    latency = {k: summary([v for _, v in xs]) for k, xs in samples.items()}
    lag = lag_growth([(t, v) for t, v in samples["final"]], opts.targets.lag_growth_s)
    rtf = {
        ("asr" if k == "asr_busy_s" else k.removesuffix("_busy_s")): round(v / audio_s, 4)
        for k, v in run.stats.items()
        if k.endswith("_busy_s")
    }
    dropped = {k: int(v) for k, v in run.stats.items() if "dropped" in k}
    dropped |= {"turns_without_final": missing, "calls_closed_abnormally": abnormal}
    fig: dict[str, Any] = {
        "calls": run.calls,
        "audio_s": round(audio_s, 1),
        "wall_s": round(run.wall_s, 1),
        "latency_s": latency,
        "lag": lag,
        "rtf": rtf | {"server_cpu": run.server["cpu_per_audio_s"]},
        "server": run.server | {"bench_client_cpu_cores": round(run.client_cpu_cores, 3)},
        "dropped": dropped,
        # customer cards that waited for the deck's rate limit: out of the card latency above
        "rate_limited_cards": waited,
    }
    objections = _objection_cards(run, calls)
    if objections is not None:
        fig["objection_cards"] = objections
    fig["within_targets"] = within(fig, opts.targets)
    fig["samples"] = samples
    return fig


def within(fig: dict[str, Any], t: Targets) -> bool:
    final, card = fig["latency_s"]["final"]["p95"], fig["latency_s"]["card"]["p95"]
    growing = fig["lag"]["growing"]
    if final is None or card is None or growing is None:
        return False
    return bool(final <= t.final_p95_s and card <= t.card_p95_s and not growing)


def _turns_without_final(events: list[dict[str, Any]], call: BenchCall) -> int:
    from bench.metrics import turn_of

    heard = {
        turn_of(call.call.utterances, e["speaker"], e["end_s"])
        for e in events
        if e["type"] == "transcript" and e["is_final"]
    }
    return sum(1 for u in call.call.utterances if u.start_s >= WARMUP_S and u not in heard)


def _objection_cards(run: LevelRun, calls: Sequence[BenchCall]) -> dict[str, Any] | None:
    turns = carded = 0
    for k, _, res in run.runs:
        turns += len(calls[k].objection_turns)
        carded += len(carded_objections(res.events, calls[k]))
    if turns == 0:
        return None
    return {"turns": turns, "carded": carded, "recall": round(carded / turns, 3)}


def carded_objections(events: Sequence[dict[str, Any]], call: BenchCall) -> set[int]:
    """The call's objection turns that a card of a right kind was shown for: issued, or an
    earlier card of that kind updated to quote the turn (the deck updates a card on screen
    rather than issue a second one), or a provisional card confirmed on it. A card the final
    took back (withdrawn) counts for none of its turns."""
    from bench.bench_card_accuracy import SHOWN, turn_index

    cards = [e for e in events if e["type"] == "card"]
    withdrawn = {e.get("card_id") for e in cards if e.get("state") == "withdrawn"}
    got = set()
    for e in cards:
        if e.get("state") not in SHOWN or not e.get("evidence") or e.get("card_id") in withdrawn:
            continue
        t = turn_index(call.call.utterances, e["evidence"])
        if t in call.objection_turns and e.get("kind") in call.labels[t]:
            got.add(t)
    return got


async def capacity_search(
    level: Callable[[int], Awaitable[dict[str, Any]]], max_calls: int
) -> dict[str, Any]:
    """The largest N whose level is within the targets: N doubles from 1, then bisects."""
    good, bad, n = 0, max_calls + 1, 1
    while True:
        if (await level(n))["within_targets"]:
            good = n
            if n >= max_calls:
                break
            n = min(2 * n, max_calls)
        else:
            bad = n
            break
    while bad - good > 1:
        mid = (good + bad) // 2
        if (await level(mid))["within_targets"]:
            good = mid
        else:
            bad = mid
    return {"calls": good, "first_failing": bad if bad <= max_calls else None}


def vad_rtf(call: BenchCall, telephone: bool) -> float:
    """Silero VAD compute seconds per second of call audio (both channels), in this process."""
    from bench.realspeech import telephone as degrade
    from models.registry import silero_path
    from models.vad import silero_factory

    detector = silero_factory(silero_path())()
    n = detector.frame_samples
    spent = 0.0
    for audio in (call.call.rep, call.call.customer):
        audio = degrade(audio) if telephone else audio
        t0 = time.perf_counter()
        for i in range(0, len(audio) - len(audio) % n, n):
            detector.probability(audio[i : i + n])
        spent += time.perf_counter() - t0
    return round(spent / call.audio_s, 5)


def wer_figures(
    level: LevelRun, calls: Sequence[BenchCall], offline: dict[str, str]
) -> dict[str, Any]:
    """Streamed finals vs the offline decode, over every side with a reference."""
    from bench.realspeech import edits

    words = streamed = off = 0
    for k, _, res in level.runs:
        call = calls[k]
        for speaker, ref in call.references.items():
            finals = [
                e for e in res.events
                if e["type"] == "transcript" and e["is_final"] and e["speaker"] == speaker
            ]  # fmt: skip
            hyp = " ".join(e["text"] for e in sorted(finals, key=lambda e: e["start_s"]))
            e_s, w = edits(ref, hyp)
            e_o, _ = edits(ref, offline[f"{call.name}:{speaker}"])
            words, streamed, off = words + w, streamed + e_s, off + e_o
    if words == 0:
        return {}
    return {
        "words": words,
        "streamed": round(streamed / words, 4),
        "offline": round(off / words, 4),
        "delta_points": round(100 * (streamed - off) / words, 2),
    }


def offline_texts(calls: Sequence[BenchCall], model: str, telephone: bool) -> dict[str, str]:
    from bench.bench_real import offline
    from bench.realspeech import Item
    from bench.realspeech import telephone as degrade

    items = []
    for c in calls:
        for speaker, ref in c.references.items():
            audio = c.call.rep if speaker == "rep" else c.call.customer
            items.append(
                Item(f"{c.name}:{speaker}", degrade(audio) if telephone else audio, ref, ())
            )
    return offline(model, "telephone" if telephone else "wideband", items) if items else {}


def call_set(opts: BenchOptions) -> list[BenchCall]:
    calls = scripted_set(opts.quick) if opts.scripted else []
    calls += [real_call(p) for p in opts.real]
    if not calls:
        raise ValueError("no calls to replay: give --real files or keep the scripted set")
    if opts.chain > 1:
        return [chained(calls, i, opts.chain) for i in range(len(calls))]
    return calls


async def run_bench(
    opts: BenchOptions, calls: Sequence[BenchCall] | None = None, bar: Bar | None = None
) -> dict[str, Any]:
    """Run the benchmark, write its outputs, and return the report (``report.json``)."""
    from bench.report import require_matplotlib, write_outputs
    from clients.localserver import start_server, stop_server

    require_matplotlib()
    bar = bar or Bar()
    calls = list(calls) if calls is not None else call_set(opts)
    env = {"CUECARD_MODEL": opts.model}
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine({**os.environ, **env}) | {"load_1m_before": os.getloadavg()[0]},
        "options": _options_dict(opts),
        "call_set": [_describe(c) for c in calls],
    }
    bar.show("VAD timing", 0.0)
    vad = vad_rtf(calls[0], opts.telephone)
    runs: dict[int, LevelRun] = {}
    levels: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, c in enumerate(calls):
            files.append(Path(tmp) / f"call-{i}.wav")
            c.call.write(files[-1])
        bar.show("starting cuecard serve", 0.0)
        server = start_server(Path(tmp) / "data", **env)
        try:

            async def level(n: int) -> dict[str, Any]:
                runs[n] = await replay_level(server, files, calls, n, opts, bar)
                levels[n] = level_figures(runs[n], calls, opts)
                levels[n]["rtf"]["vad_offline"] = vad
                bar.note(_one_line(levels[n]))
                return levels[n]

            if opts.capacity:
                report["capacity"] = await capacity_search(level, opts.max_calls)
                report["capacity"]["targets"] = asdict(opts.targets)
            else:
                for n in opts.levels:
                    await level(n)
        finally:
            stop_server(server)
    bar.show("offline decode for WER", 0.0)
    used = sorted({k for run in runs.values() for k, _, _ in run.runs})
    offline = offline_texts([calls[k] for k in used], opts.model, opts.telephone)
    for n, run in runs.items():
        levels[n]["wer"] = wer_figures(run, calls, offline)
    report["levels"] = [levels[n] for n in sorted(levels)]
    report["unmeasured"] = unmeasured(report["levels"])
    folder = opts.out_dir / _stamp(opts)
    folder.mkdir(parents=True, exist_ok=True)
    save_events(runs, calls, folder / "events.jsonl")
    write_outputs(report, folder)
    bar.note(f"report: {report['files']['markdown']}")
    return report


def unmeasured(levels: Sequence[dict[str, Any]]) -> list[str]:
    """Paths of figures a level promises and did not measure (None, NaN or missing)."""
    promised = ("latency_s", "lag", "rtf", "server", "dropped", "wer")
    out: list[str] = []

    def walk(path: str, x: Any) -> None:
        if isinstance(x, dict):
            if not x:
                out.append(path)
            for k, v in x.items():
                walk(f"{path}.{k}", v)
        elif x is None or (isinstance(x, float) and x != x):
            out.append(path)

    for lvl in levels:
        for key in promised:
            walk(f"calls={lvl['calls']}.{key}", lvl.get(key))
    return out


def _one_line(lvl: dict[str, Any]) -> str:
    lat = lvl["latency_s"]
    return (
        f"{lvl['calls']} calls: final p95 {lat['final']['p95']} s, card p95 {lat['card']['p95']}"
        f" s, partial p95 {lat['partial']['p95']} s, lag growth {lvl['lag']['growth_s']} s, ASR "
        f"RTF {lvl['rtf'].get('asr')}, server {lvl['server']['cpu_cores']} cores -> "
        f"{'within' if lvl['within_targets'] else 'OUTSIDE'} the targets"
    )


def _options_dict(opts: BenchOptions) -> dict[str, Any]:
    d = asdict(opts)
    d["real"] = [str(p) for p in opts.real]
    d["out_dir"] = str(opts.out_dir)
    d["readme"] = str(opts.readme) if opts.readme else ""
    d["path"] = "twilio-8k-mulaw" if opts.telephone else "native-16k-pcm16"
    return d


def _describe(c: BenchCall) -> dict[str, Any]:
    return {
        "name": c.name,
        "source": c.source,
        "audio_s": round(c.audio_s, 1),
        "turns": len(c.call.utterances),
        "objection_turns": len(c.objection_turns),
        "reference_sides": sorted(c.references),
    }


def _stamp(opts: BenchOptions) -> str:
    kind = "capacity" if opts.capacity else "bench"
    rate = "8k" if opts.telephone else "16k"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{opts.model}-{rate}{'-quick' if opts.quick else ''}"


def save_events(runs: dict[int, LevelRun], calls: Sequence[BenchCall], path: Path) -> None:
    with path.open("w") as f:
        for n, run in sorted(runs.items()):
            for i, (k, offset, res) in enumerate(run.runs):
                head = {"level": n, "copy": i, "call": calls[k].name, "offset_s": round(offset, 3)}
                for e in res.events:
                    f.write(json.dumps(head | e) + "\n")
