"""The GPU check: how many streams one recognizer holds at final p95 <= 0.5 s, no sockets.

``python -m bench.gpu`` renders one two-speaker espeak-ng call once (customer turns of about
2, 5, 10 and 15 s, so every length bucket is exercised), runs Silero + the segmenter over it
once (every replay of the same audio yields the same speech events), then for each N in
``--calls`` replays N copies of that call at 1.0x with staggered starts through the real
``nlp.asr.transcribe`` stage and one shared ``AsrScheduler`` (batched recognition, the
server's policy), and measures each final's latency: the wall time it left the stage minus
the end of its last word (capped at the end of its scripted turn), by utterance length. It stops at the first level that misses
the target and prints the largest N that held it.

``--device cuda`` (the default) needs a CUDA device; it fails at once, with the reason, when
CTranslate2 sees none. ``--device cpu --calls 2`` is the dry run any machine can do; the
per-length rows then show where a final's time goes on this CPU
(``CT2_FORCE_CPU_ISA=AVX2`` emulates an AVX2-only box on a newer one).

    python -m bench.gpu [--device cuda|cpu] [--calls 8 16 32 64] [--model tiny.en]
                        [--compute-type float16] [--target-p95 0.5] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audio.segmenter import SegmenterOptions, SpeechEvent
from bench.metrics import pct, turn_of
from bench.stream_sim import speech_events
from clients.callgen import RenderedCall, Spoken, Turn, render
from nlp.asr import AsrOptions, transcribe
from nlp.scheduler import AsrScheduler
from nlp.transcript import Transcript

LENGTH_CALL: tuple[Turn, ...] = (
    Turn("rep", "Hi, this is Sam from Acme. Thanks for taking the time today."),  # warm-up
    Turn("customer", "The price is too high for us."),  # 1.6 s
    Turn("rep", "I understand. What budget did you have in mind for the first year?"),  # 3.9 s
    Turn(
        "customer",
        "I would need to talk to our finance team before we can move forward with anything, "
        "and they usually want to see a proposal with the total cost for the whole year and "
        "a plan for the rollout.",
    ),  # 9.7 s
    Turn("rep", "Of course, that makes sense."),  # 1.8 s
    Turn(
        "customer",
        "We are also comparing two other vendors right now, and our VP of sales wants a pilot "
        "first, so we need to know how long onboarding takes and whether your tool works with "
        "Salesforce and with our phone system, because we want to decide this quarter.",
    ),  # 14.4 s
    Turn(
        "rep",
        "Onboarding takes about two weeks, and yes, we integrate with Salesforce and with most "
        "phone systems, including Twilio, so your team can start the pilot right away, and we "
        "will train your managers in the first week.",
    ),  # 12.8 s
    Turn("customer", "That sounds good. Please send the proposal to our legal team."),  # 3.7 s
    Turn(
        "rep",
        "I will send the proposal by Friday, with the pricing for ten reps and for the whole "
        "team, and I will include a short security overview, because your legal team will ask "
        "for it, and a reference call with a customer.",
    ),  # 12.0 s
    Turn("customer", "Great, thank you."),
    Turn("rep", "Talk to you next week."),
)
WARMUP_S = 4.0  # the first turn warms each call's context; left out of the figures
BUCKETS_S = (3.5, 7.5, 12.5)  # utterance length buckets: <3.5, <7.5, <12.5, longer


@dataclass(frozen=True, slots=True)
class FinalSample:
    length_s: float  # the utterance's words, first start to last end
    latency_s: float  # final left the stage minus its last word's end


def bucket(length_s: float) -> str:
    edges = [0.0, *BUCKETS_S]
    for lo, hi in zip(edges, [*BUCKETS_S, float("inf")], strict=True):
        if length_s < hi:
            return f"{lo:g}-{hi:g}s" if hi != float("inf") else f">{lo:g}s"
    raise AssertionError("unreachable")


async def replay(
    events: Sequence[tuple[float, int, SpeechEvent]], t0: float
) -> AsyncIterator[SpeechEvent]:
    """The precomputed events, each at its arrival time on the wall clock from ``t0``."""
    loop = asyncio.get_running_loop()
    for at_s, _, event in events:
        delay = t0 + at_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield event


async def one_call(
    events: Sequence[tuple[float, int, SpeechEvent]],
    spoken: Sequence[Spoken],
    scheduler: AsrScheduler,
    options: AsrOptions,
    start_delay_s: float,
) -> tuple[list[FinalSample], dict[str, list[str]]]:
    """The call's final latencies, and its final texts by speaker (for WER)."""
    await asyncio.sleep(start_delay_s)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    out: list[FinalSample] = []
    texts: dict[str, list[str]] = {"rep": [], "customer": []}
    async for item in transcribe(replay(events, t0), scheduler, options):
        if not (isinstance(item, Transcript) and item.is_final):
            continue
        texts.setdefault(item.speaker, []).append(item.text)
        turn = turn_of(spoken, item.speaker, item.end_s)
        if turn is None or turn.start_s < WARMUP_S:
            continue
        speech_end = min(item.end_s, turn.end_s)  # its last word's end, within the turn
        out.append(FinalSample(item.end_s - item.start_s, loop.time() - t0 - speech_end))
    return out, texts


def call_wer(spoken: Sequence[Spoken], texts: dict[str, list[str]]) -> float:
    """WER of the streamed finals against the script, both speakers."""
    from bench.metrics import wer

    ref = " ".join(" ".join(u.text for u in spoken if u.speaker == s) for s in ("rep", "customer"))
    hyp = " ".join(" ".join(texts.get(s, [])) for s in ("rep", "customer"))
    return wer(ref, hyp)


async def one_level(
    n: int,
    events: Sequence[tuple[float, int, SpeechEvent]],
    call: RenderedCall,
    scheduler: AsrScheduler,
    stagger_s: float,
) -> dict[str, Any]:
    busy0, t0 = scheduler.busy_s, time.monotonic()
    dropped0, preempted0 = scheduler.dropped_partials, scheduler.preempted_partials
    batches0, jobs0 = scheduler.batches, scheduler.batched_jobs
    results = await asyncio.gather(
        *(
            one_call(events, call.utterances, scheduler, AsrOptions(), (i * stagger_s) % 10.0)
            for i in range(n)
        )
    )
    samples = [s for r, _ in results for s in r]
    wers = [call_wer(call.utterances, texts) for _, texts in results]
    lat = [s.latency_s for s in samples]
    row: dict[str, Any] = {
        "calls": n,
        "finals": len(lat),
        "final_p50_s": round(pct(lat, 50), 3),
        "final_p95_s": round(pct(lat, 95), 3),
        "asr_busy_share": round(
            (scheduler.busy_s - busy0) / (time.monotonic() - t0) / scheduler.options.workers, 3
        ),
        "dropped_partials": scheduler.dropped_partials - dropped0,
        "wer_vs_script": round(sum(wers) / len(wers), 4),
        "by_length": {},
    }
    for name in sorted(
        {bucket(s.length_s) for s in samples}, key=lambda b: float(b.strip(">s").split("-")[0])
    ):
        xs = [s.latency_s for s in samples if bucket(s.length_s) == name]
        row["by_length"][name] = {
            "n": len(xs),
            "p50": round(pct(xs, 50), 3),
            "p95": round(pct(xs, 95), 3),
        }
    row["batches"] = scheduler.batches - batches0
    row["mean_batch"] = round((scheduler.batched_jobs - jobs0) / max(1, row["batches"]), 2)
    row["preempted_partials"] = scheduler.preempted_partials - preempted0
    return row


def check_device(device: str) -> str | None:
    """Why ``device`` cannot run here, or None."""
    import ctranslate2

    if device == "cuda" and ctranslate2.get_cuda_device_count() < 1:
        return (
            "no CUDA device: CTranslate2 sees 0 GPUs (is the NVIDIA driver loaded, and the CUDA 12 "
            "cuBLAS/cuDNN 9 libraries on the library path?). For a CPU dry run: "
            "python -m bench.gpu --device cpu --calls 2"
        )
    return None


def load(args: argparse.Namespace) -> AsrScheduler:
    """The server's recognizer for ``--device``: the same transcriber and batch sizes."""
    from models.registry import load_transcriber
    from server.engines import scheduler_options
    from server.settings import Settings

    settings = Settings(
        device=args.device,
        compute_type=args.compute_type or "",
        asr_threads=args.threads,
        asr_workers=args.workers,
    )
    transcriber = load_transcriber(
        args.model,
        threads=args.threads,
        workers=settings.resolved_asr_workers,
        device=args.device,
        compute_type=args.compute_type or "",
    )
    return AsrScheduler(transcriber, options=scheduler_options(settings))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    call = render(LENGTH_CALL[: args.turns] if args.turns else LENGTH_CALL)
    from models.registry import load_detectors

    channels = {"rep": call.rep, "customer": call.customer}
    events = speech_events(channels, load_detectors("silero"), SegmenterOptions())
    scheduler = load(args)
    rows: list[dict[str, Any]] = []
    held = 0
    started = time.monotonic()
    try:
        for n in args.calls:
            if time.monotonic() - started + call.duration_s + 10 > args.budget_s:
                print(f"stopping before N={n}: --budget-s {args.budget_s:g} s", file=sys.stderr)
                break
            row = await one_level(n, events, call, scheduler, args.stagger)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if not row["final_p95_s"] <= args.target_p95:
                break
            held = n
    finally:
        await scheduler.stop()
    return {
        "machine": machine(),
        "device": args.device,
        "model": args.model,
        "compute_type": getattr(scheduler.transcriber, "compute_type", args.compute_type),
        "batch": {
            "finals": scheduler.options.max_batch,
            "partials": scheduler.options.max_partial_batch,
        },
        "call_audio_s": round(call.duration_s, 1),
        "target_final_p95_s": args.target_p95,
        "streams_held": held,
        "levels": rows,
    }


def machine() -> str:
    isa = os.environ.get("CT2_FORCE_CPU_ISA")
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = " (CT2_FORCE_CPU_ISA=" + isa + ", emulated)" if isa else ""
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu}{flags}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--calls", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--compute-type", default=None)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (cpu)")
    parser.add_argument(
        "--workers", type=int, default=0, help="decodes at once (0: the server's default)"
    )
    parser.add_argument("--stagger", type=float, default=1.3)
    parser.add_argument("--target-p95", type=float, default=0.5)
    parser.add_argument("--budget-s", type=float, default=280.0, help="start no level after this")
    parser.add_argument("--turns", type=int, default=0, help="replay only the first N turns")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    why = check_device(args.device)
    if why is not None:
        print(f"bench.gpu: {why}", file=sys.stderr)
        return 2
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=2))
    print(f"streams held at final p95 <= {args.target_p95:g} s: {report['streams_held']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
