"""Issue 10's accuracy figures in one run, everything through the real server at 1.0x.

One ``cuecard serve`` per model on a free loopback port (``clients.localserver.start_server``);
every call goes in as a stereo WAV (left rep, right customer) through ``clients.simulator`` at
1.0x, natively (PCM16 16 kHz) and as Twilio Media Streams (mu-law 8 kHz). Printed and, with
``--json``, written:

- **Real speech** (``../shared/real-speech``, never trained on): the two composed two-speaker
  calls of ``bench.realspeech.compose_calls`` and (not with ``--quick``) every read file with a
  reference as the customer channel of a short call of its own (the rep's line a -70 dBFS noise
  floor; words streamed there are counted as phantom words). Per path: streamed WER of the
  server's finals (the README normaliser, edits summed over words), offline WER of the same
  model on the same channel audio (faster-whisper ``transcribe``, 30 s windows, beam 5,
  ``condition_on_previous_text=False``: ``bench.bench_real.offline``; for the Twilio path of the
  channel as ``bench.realspeech.telephone`` decodes it, which is what the server hears), and
  their difference. The server masks digit runs by design (``nlp.redaction``; the AN4 file is
  15 digits said one by one), so runs of 3+ digit words and placeholders are scored out on every
  side, and the digits the server showed anyway are counted (``digits_shown``).
- **Final and partial latency** on the composed calls, by ``bench.bench_stream.measure``
  (REFERENCE.md's definitions; turns starting in the first 5 s are a warm-up, excluded).
- **Cards** on the labelled scripted calls of ``bench.bench_card_accuracy`` (espeak-ng voices
  and paces, one rendering at 8 kHz mu-law through Twilio), through the same server: precision,
  recall of labelled customer turns, false cards per call-minute, card latency p50/p95.
- The machine: CPU model, avx2/avx512f/avx512_vnni flags, cores, load at the start (figures
  taken while other work runs on the machine are noisy).

    python -m bench.bench_accuracy [--quick] [--no-cards] [--model tiny.en --model base] [--json FILE]

``--quick`` (about 5 minutes on 2 cores): the composed calls on both paths and the telephone
rendering of the scripted calls only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

from audio.chunk import SAMPLE_RATE_HZ, Samples, Speaker
from bench.bench_card_accuracy import VARIANTS, Variant, card_accuracy
from bench.bench_real import GROUP_ORDER, offline
from bench.bench_stream import asr_busy_s, measure, pct
from bench.realspeech import (
    NOISE_FLOOR,
    Item,
    compose_calls,
    edits,
    items,
    normalise,
    telephone,
)
from clients.callgen import RenderedCall, Spoken
from clients.simulator import SimOptions, simulate

AudioPath = Literal["wideband", "telephone"]
PATHS: tuple[AudioPath, ...] = ("wideband", "telephone")
LEAD_S, TAIL_S = 0.5, 1.5  # a read file's short call: line noise before and after the file
FILE_CALLS_AT_ONCE = 4
COUNTS = ("words", "streamed", "offline", "digits_shown")
PLACEHOLDER = re.compile(r"\[[A-Z]+\]")
DIGIT_WORDS = frozenset("zero one two three four five six seven eight nine".split())


@dataclass(frozen=True, slots=True)
class Call:
    """One stereo WAV for the simulator; ``channels`` are the samples as written (int16
    precision), ``references`` the scored sides, ``spans`` each side's speech (seconds)."""

    name: str
    wav: Path
    channels: dict[Speaker, Samples]
    references: dict[Speaker, str]
    spans: dict[Speaker, tuple[tuple[float, float], ...]]
    groups: tuple[str, ...]


def machine() -> dict[str, Any]:
    """CPU model, the SIMD flags that change Whisper's speed and words, cores, load."""
    model, flags = "unknown", set[str]()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {
        "cpu": model,
        **{f: f in flags for f in ("avx2", "avx512f", "avx512_vnni")},
        "cores": os.cpu_count(),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
    }


def write_call(folder: Path, name: str, rep: Samples, customer: Samples) -> dict[Speaker, Samples]:
    """Writes ``name.wav`` (PCM16, left rep) and returns both channels as read back."""
    path = folder / f"{name}.wav"
    sf.write(str(path), np.stack([rep, customer], axis=1), SAMPLE_RATE_HZ, subtype="PCM_16")
    back, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return {"rep": np.ascontiguousarray(back[:, 0]), "customer": np.ascontiguousarray(back[:, 1])}


def composed_calls(folder: Path, pool: list[Item]) -> list[Call]:
    by_name = {i.name: i for i in compose_calls(pool)}
    out = []
    for call in sorted({n.split(":")[0] for n in by_name}):
        rep, customer = by_name[f"{call}:rep"], by_name[f"{call}:customer"]
        channels = write_call(folder, call, rep.audio, customer.audio)
        refs: dict[Speaker, str] = {"rep": rep.reference, "customer": customer.reference}
        spans: dict[Speaker, tuple[tuple[float, float], ...]] = {
            "rep": rep.turns,
            "customer": customer.turns,
        }
        out.append(Call(call, folder / f"{call}.wav", channels, refs, spans, ("call",)))
    return out


def file_calls(folder: Path, pool: list[Item]) -> list[Call]:
    """Each read file (or channel) as the customer of a short call; the rep's line is quiet."""
    rng = np.random.default_rng(11)
    out = []
    for k, item in enumerate(pool):
        n = int(LEAD_S * SAMPLE_RATE_HZ) + len(item.audio) + int(TAIL_S * SAMPLE_RATE_HZ)
        rep = (rng.standard_normal(n) * NOISE_FLOOR).astype(np.float32)
        customer = (rng.standard_normal(n) * NOISE_FLOOR).astype(np.float32)
        at = int(LEAD_S * SAMPLE_RATE_HZ)
        customer[at : at + len(item.audio)] += item.audio
        name = f"file{k:02d}"
        channels = write_call(folder, name, rep, customer)
        span = ((LEAD_S, LEAD_S + len(item.audio) / SAMPLE_RATE_HZ),)
        out.append(
            Call(
                item.name,
                folder / f"{name}.wav",
                channels,
                {"customer": item.reference},
                {"customer": span, "rep": ()},
                (*item.groups, "all_files"),
            )
        )
    return out


def offline_texts(model: str, path: AudioPath, calls: Sequence[Call]) -> dict[str, str]:
    """Offline decodes of every scored channel, as the server hears it on ``path``."""
    prepare = telephone if path == "telephone" else (lambda a: a)
    todo = [
        Item(f"{c.name}:{side}", prepare(c.channels[side]), ref, c.groups)
        for c in calls
        for side, ref in c.references.items()
    ]
    return offline(model, path, todo)


async def stream(
    calls: Sequence[Call], server: Any, path: AudioPath, at_once: int
) -> dict[str, list[dict[str, Any]]]:
    """Every call through the server at 1.0x, ``at_once`` at a time; events by call."""
    gate = asyncio.Semaphore(at_once)

    async def one(call: Call) -> tuple[str, list[dict[str, Any]]]:
        async with gate:
            opts = SimOptions(
                server=server.ws, token=server.token, speed=1.0, twilio=path == "telephone"
            )
            return call.name, (await simulate(call.wav, opts)).events

    return dict(await asyncio.gather(*(one(c) for c in calls)))


def finals(events: list[dict[str, Any]], speaker: str) -> list[dict[str, Any]]:
    """The speaker's final transcripts, in audio order."""
    got = [e for e in events if e["type"] == "transcript" and e["is_final"]]
    return sorted((e for e in got if e["speaker"] == speaker), key=lambda e: e["start_s"])


def scored(text: str) -> str:
    """The words scored: the README normaliser, then redaction placeholders and runs of 3+
    digit words out. The server masks digit runs by design (the AN4 file's 15 digits), so they
    are no recognition figure; whether it masked them is counted apart (``digits_shown``)."""
    words = normalise(PLACEHOLDER.sub(" ", text))
    keep, run = [], []
    for w in [*words, ""]:
        if w in DIGIT_WORDS:
            run.append(w)
            continue
        keep += run if len(run) < 3 else []
        run = []
        keep.append(w)
    return " ".join(keep[:-1])


def score(
    calls: Sequence[Call], events: dict[str, list[dict[str, Any]]], off: dict[str, str]
) -> dict[str, Any]:
    """WER per group, edits summed over words: streamed finals and offline, as ``scored``."""
    groups: dict[str, dict[str, int]] = {}
    per_channel: dict[str, dict[str, Any]] = {}
    phantom = 0
    for c in calls:
        for side in ("rep", "customer"):
            got = finals(events[c.name], side)
            hyp = " ".join(e["text"] for e in got)
            if side not in c.references:
                phantom += len(hyp.split())
                continue
            key, ref = f"{c.name}:{side}", scored(c.references[side])
            e_s, n = edits(ref, scored(hyp))
            per_channel[key] = {
                "words": n,
                "streamed": e_s,
                "offline": edits(ref, scored(off[key]))[0],
                "digits_shown": len(re.findall(r"\d", hyp)),
                "finals": [(e["start_s"], e["end_s"], e["text"]) for e in got],
                "offline_text": off[key],
            }
            for g in c.groups:
                acc = groups.setdefault(g, dict.fromkeys(COUNTS, 0))
                for k in COUNTS:
                    acc[k] += per_channel[key][k]
    return {
        "wer": {g: wer_row(groups[g]) for g in GROUP_ORDER if g in groups},
        "phantom_words_on_quiet_rep_line": phantom,
        "channels": per_channel,
    }


def wer_row(acc: dict[str, int]) -> dict[str, Any]:
    n = max(1, acc["words"])
    s, o = acc["streamed"] / n, acc["offline"] / n
    return {**acc, "streamed_wer": round(s, 4), "offline_wer": round(o, 4),
            "delta_points": round(100 * (s - o), 1)}  # fmt: skip


def latency(calls: Sequence[Call], events: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Final and partial latency over the calls, by ``bench_stream.measure``."""
    got: dict[str, list[float]] = {"final": [], "partial": []}
    for c in calls:
        spoken = sorted(
            (Spoken(side, "", lo, hi) for side, spans in c.spans.items() for lo, hi in spans),
            key=lambda u: u.start_s,
        )
        rendered = RenderedCall(c.channels["rep"], c.channels["customer"], tuple(spoken))
        m = measure(events[c.name], rendered, 1.0)
        for k in got:
            got[k] += m[k]
    return {k: {"n": len(v), "p50": round(pct(v, 50), 3), "p95": round(pct(v, 95), 3)}
            for k, v in got.items()}  # fmt: skip


async def real_speech(
    calls: Sequence[Call], server: Any, path: AudioPath, off: dict[str, str], at_once: int
) -> dict[str, Any]:
    busy0, t0 = asr_busy_s(server), time.monotonic()
    events = await stream(calls, server, path, at_once)
    audio_s = sum(len(c.channels["rep"]) for c in calls) / SAMPLE_RATE_HZ
    return {
        **score(calls, events, off),
        "latency_s": latency(calls, events),
        "asr_busy_per_audio_s": round((asr_busy_s(server) - busy0) / audio_s, 3),
        "wall_s": round(time.monotonic() - t0, 1),
        "statuses": [
            e
            for evs in events.values()
            for e in evs
            if e["type"] == "status" and e.get("state") not in ("live", "ended")
        ],
    }


async def run_model(
    model: str, sets: dict[str, list[Call]], variants: Sequence[Variant], data: Path
) -> dict[str, Any]:
    """Every set on both paths through one server of ``model``, then the card calls of
    ``variants`` (none: no cards)."""
    from clients.localserver import start_server, stop_server

    # Offline decodes first (cached), so they never compete with a live stream for the CPU.
    off = {p: offline_texts(model, p, [c for cs in sets.values() for c in cs]) for p in PATHS}
    out: dict[str, Any] = {"model": model}
    server = start_server(data / model, CUECARD_MODEL=model)
    try:
        for name, calls in sets.items():
            at_once = len(calls) if name == "composed_calls" else FILE_CALLS_AT_ONCE
            for p in PATHS:
                out[f"{name}/{p}"] = await real_speech(calls, server, p, off[p], at_once)
                print_set(f"{name}/{p}", out[f"{name}/{p}"])
        if variants:
            cards = await card_accuracy(variants, server=server)
            out["cards"] = {k: v for k, v in cards.items() if k != "machine"}
            print_cards(out["cards"])
    finally:
        stop_server(server)
    return out


def print_set(title: str, r: dict[str, Any]) -> None:
    lat = r["latency_s"]
    for g, a in r["wer"].items():
        line = (
            f"  {title:<26}{g:<13}{a['words']:>6}{100 * a['streamed_wer']:>9.1f}%"
            f"{100 * a['offline_wer']:>9.1f}%{a['delta_points']:>+7.1f}{a['digits_shown']:>7}"
        )
        if g == "call":
            f, p = lat["final"], lat["partial"]
            line += (
                f"   final {f['p50']}/{f['p95']} s (n={f['n']}), partial {p['p50']}/{p['p95']} s"
            )
        print(line, flush=True)
    print(
        f"  {'':<26}ASR busy {r['asr_busy_per_audio_s']} s per call-audio s, phantom words on "
        f"a quiet rep line {r['phantom_words_on_quiet_rep_line']}, degraded statuses "
        f"{len(r['statuses'])}, wall {r['wall_s']} s",
        flush=True,
    )


def print_cards(c: dict[str, Any]) -> None:
    lat = c["latency_s"]
    print(
        f"  cards ({c['calls']} calls, {c['call_minutes']} min): precision {c['precision']}, "
        f"recall {c['recall']} ({c['recalled']}), false/min {c['false_cards_per_min']}, "
        f"card latency p50/p95 {lat['p50']}/{lat['p95']} s (n={lat['n']}), "
        f"withdrawn {c['withdrawn']}",
        flush=True,
    )
    if (free := c.get("latency_not_held_s")) is not None:
        print(
            f"    card latency of turns not held by the rate limit: p50/p95 "
            f"{free['p50']}/{free['p95']} s (n={free['n']}); held {c['held_by_rate_limit']}",
            flush=True,
        )
    for name, v in c["per_variant"].items():
        print(
            f"    {name:<26} precision {v['precision']}, recall {v['recall']}, "
            f"false/min {v['false_cards_per_min']}, latency p50/p95 "
            f"{v['latency_s']['p50']}/{v['latency_s']['p95']} s",
            flush=True,
        )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine(), "speed": 1.0, "quick": args.quick, "runs": []}
    m = report["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, avx2 {m['avx2']}, avx512f {m['avx512f']}, "
        f"avx512_vnni {m['avx512_vnni']}; load {m['load_1m_at_start']} at start",
        flush=True,
    )
    variants = [v for v in VARIANTS if v.telephone] if args.quick else list(VARIANTS)
    if args.no_cards:
        variants = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pool = items()
        sets = {"composed_calls": composed_calls(folder, pool)}
        if not args.quick:
            sets["read_files"] = file_calls(folder, pool)
        print(
            f"  {'set/path':<26}{'group':<13}{'words':>6}{'streamed':>10}{'offline':>10}"
            f"{'delta':>7}{'digits':>7}   latency p50/p95"
        )
        for model in args.model or ["tiny.en"]:
            print(f"model {model}", flush=True)
            report["runs"].append(await run_model(model, sets, variants, folder / "data"))
    return report


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="composed calls, telephone cards")
    parser.add_argument("--no-cards", action="store_true", help="real speech only, no card calls")
    parser.add_argument("--model", action="append", choices=["tiny.en", "base"])
    parser.add_argument("--json", type=Path, help="write every figure (and hypothesis) here")
    args = parser.parse_args()
    t0 = time.monotonic()
    report = asyncio.run(main_async(args))
    report["wall_s"] = round(time.monotonic() - t0, 1)
    print(f"wall {report['wall_s']} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
