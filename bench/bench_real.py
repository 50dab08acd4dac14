"""Streamed vs offline WER and final latency on the real-speech set (issue 10).

For each model (tiny.en, base) and each audio path (``wideband``: the 16 kHz files;
``telephone``: 8 kHz mu-law decoded and resampled by ``audio.codec`` as for Twilio) it prints,
per README group (edits summed over words, the README's normaliser on both sides):

- streamed WER: the finals of the live stream (Silero VAD, ``audio.segmenter``, the server's
  scheduler policy and ``nlp.asr.accept``, replayed on a virtual clock by
  ``bench.stream_sim``), each file as its own channel, and two composed two-speaker calls;
- offline WER of the same model: faster-whisper ``transcribe`` of each whole file or channel
  (30 s windows, beam 5, ``condition_on_previous_text=False``), cached on disk;
- their difference (points), final latency p50/p95 on the calls (partial decodes included;
  the single files are streamed without partials, which change only timing) (emitted minus the end of
  the speech, as REFERENCE.md defines it, without socket overhead) and the Whisper busy time
  per second of audio.

Usage: ``python -m bench.bench_real [--quick] [--model tiny.en --model base]
[--path wideband --path telephone] [--json OUT]`` plus the stream options below (``--help``)
for one-change-at-a-time sweeps.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from audio.segmenter import SegmenterOptions
from bench.realspeech import Item, compose_calls, edits, items, telephone
from bench.stream_sim import Final, StreamConfig, stream
from models.registry import cache_dir, silero_path, whisper_path
from models.vad import silero_factory
from models.whisper import WhisperOptions, WhisperTranscriber

Path_ = Literal["wideband", "telephone"]
GROUP_ORDER = (
    "librispeech",
    "librivox",
    "noizeus",
    "misc",
    "two_channel",
    "meeting",
    "band_limited",
    "call",
    "all_files",
)


@dataclass(frozen=True, slots=True)
class Config:
    model: str
    path: Path_
    whisper: WhisperOptions
    stream: StreamConfig


def machine() -> str:
    flags = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln), ""
        )
        has = [f for f in ("avx2", "avx512f", "avx512_vnni") if f" {f} " in out + " "]
        flags = f"{model}, {'/'.join(has) or 'no avx2'}"
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores, {flags}"


def audio_key(item: Item) -> str:
    """The item's name and a digest of its samples: a cache entry is of exactly this audio."""
    digest = hashlib.sha1(np.ascontiguousarray(item.audio, dtype=np.float32).tobytes())
    return f"{item.name}@{digest.hexdigest()[:12]}"


def offline(model: str, path: Path_, todo: list[Item]) -> dict[str, str]:
    """faster-whisper's own transcribe of each whole item (by name), cached by model, path,
    name and audio digest."""
    import faster_whisper

    cache = cache_dir() / f"bench_real_offline-{model}-{path}-{faster_whisper.__version__}.json"
    known: dict[str, str] = json.loads(cache.read_text()) if cache.exists() else {}
    missing = [i for i in todo if audio_key(i) not in known]
    if missing:
        fw = faster_whisper.WhisperModel(
            str(whisper_path(model)), device="cpu", compute_type="int8", cpu_threads=2
        )
        for item in missing:
            segments, _ = fw.transcribe(
                item.audio,
                language="en",
                beam_size=5,
                condition_on_previous_text=False,
                vad_filter=False,
            )
            known[audio_key(item)] = " ".join(s.text.strip() for s in segments)
        cache.write_text(json.dumps(known, indent=1))
    return {i.name: known[audio_key(i)] for i in todo}


def latencies(finals: list[Final], turns: tuple[tuple[float, float], ...]) -> list[float]:
    out = []
    for f in finals:
        span = next((t for t in turns if t[0] - 0.3 <= f.words_end_s <= t[1] + 0.3), None)
        if span is not None:
            out.append(f.emitted_s - min(f.words_end_s, span[1]))
    return out


def run_config(cfg: Config, pool: list[Item], calls: list[Item]) -> dict[str, Any]:
    prepare = telephone if cfg.path == "telephone" else (lambda a: a)
    files = [Item(i.name, prepare(i.audio), i.reference, i.groups) for i in pool]
    calls = [Item(c.name, prepare(c.audio), c.reference, c.groups, c.turns) for c in calls]
    off = offline(cfg.model, cfg.path, files + calls)
    transcriber = WhisperTranscriber(whisper_path(cfg.model), cfg.whisper)
    transcriber.warmup()
    detectors = silero_factory(silero_path())
    hyp: dict[str, str] = {}
    busy = {"files": 0.0, "call": 0.0}
    audio_s = {"files": 0.0, "call": 0.0}
    lat: list[float] = []
    # A file's finals do not depend on partials (only their timing does, reported on calls).
    quiet = replace(cfg.stream, partials=False)
    for item in files:
        res = stream({"customer": item.audio}, transcriber, detectors, quiet)
        hyp[item.name] = " ".join(f.text for f in res.finals)
        busy["files"] += res.busy_s
        audio_s["files"] += len(item.audio) / 16_000
    for name in sorted({c.name.split(":")[0] for c in calls}):
        sides = {c.name.split(":")[1]: c for c in calls if c.name.startswith(name + ":")}
        res = stream({s: c.audio for s, c in sides.items()}, transcriber, detectors, cfg.stream)
        busy["call"] += res.busy_s
        audio_s["call"] += len(next(iter(sides.values())).audio) / 16_000
        for side, c in sides.items():
            mine = [f for f in res.finals if f.speaker == side]
            hyp[c.name] = " ".join(f.text for f in mine)
            lat += latencies(mine, c.turns)
    return report(cfg, files + calls, hyp, off, lat, busy, audio_s)


def report(
    cfg: Config,
    scored: list[Item],
    hyp: dict[str, str],
    off: dict[str, str],
    lat: list[float],
    busy: dict[str, float],
    audio_s: dict[str, float],
) -> dict[str, Any]:
    groups: dict[str, dict[str, int]] = {}
    per_item: dict[str, dict[str, Any]] = {}
    for item in scored:
        e_s, n = edits(item.reference, hyp.get(item.name, ""))
        e_o, _ = edits(item.reference, off[item.name])
        per_item[item.name] = {"words": n, "streamed_edits": e_s, "offline_edits": e_o}
        names = (*item.groups, "all_files") if "call" not in item.groups else item.groups
        for g in names:
            acc = groups.setdefault(g, {"words": 0, "streamed_edits": 0, "offline_edits": 0})
            acc["words"] += n
            acc["streamed_edits"] += e_s
            acc["offline_edits"] += e_o
    wer = {}
    for g in GROUP_ORDER:
        if g in groups:
            a = groups[g]
            s, o = a["streamed_edits"] / a["words"], a["offline_edits"] / a["words"]
            wer[g] = {**a, "streamed_wer": round(s, 4), "offline_wer": round(o, 4),
                      "delta_points": round(100 * (s - o), 1)}  # fmt: skip
    return {
        "model": cfg.model,
        "path": cfg.path,
        "whisper": {k: getattr(cfg.whisper, k) for k in cfg.whisper.__slots__},
        "segmenter": {k: getattr(cfg.stream.segmenter, k) for k in SegmenterOptions.__slots__},
        "partials": cfg.stream.partials,
        "context": cfg.stream.context,
        "hotwords": list(cfg.stream.hotwords),
        "wer": wer,
        "final_latency_s": {
            "n": len(lat),
            "p50": round(float(np.percentile(lat, 50)), 3) if lat else None,
            "p95": round(float(np.percentile(lat, 95)), 3) if lat else None,
        },
        "busy_per_audio_s": {k: round(busy[k] / audio_s[k], 3) for k in busy if audio_s[k]},
        "items": per_item,
        "hypotheses": hyp,
    }


def print_report(r: dict[str, Any]) -> None:
    w, lat = r["whisper"], r["final_latency_s"]
    print(
        f"\n== {r['model']} / {r['path']}  beam {w['beam_size']}, window floor "
        f"{w['min_window_s']} s, context {r['context']}, partials {r['partials']}"
    )
    print(f"{'group':<14}{'words':>6}{'streamed':>10}{'offline':>9}{'delta':>8}")
    for g, a in r["wer"].items():
        print(
            f"{g:<14}{a['words']:>6}{100 * a['streamed_wer']:>9.1f}%"
            f"{100 * a['offline_wer']:>8.1f}%{a['delta_points']:>+8.1f}"
        )
    print(
        f"final latency (calls, n={lat['n']}): p50 {lat['p50']} s, p95 {lat['p95']} s; "
        f"Whisper busy per audio s: {r['busy_per_audio_s']}"
    )


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", choices=["tiny.en", "base"])
    p.add_argument("--path", action="append", choices=["wideband", "telephone"])
    p.add_argument("--quick", action="store_true", help="tiny.en, wideband only")
    p.add_argument("--json", help="write the full report (hypotheses included) here")
    d, s = WhisperOptions(), SegmenterOptions()
    p.add_argument("--beam", type=int, default=d.beam_size)
    p.add_argument("--min-window-s", type=int, default=d.min_window_s)
    p.add_argument("--pad-s", type=float, default=d.pad_s)
    p.add_argument("--pre-roll-ms", type=int, default=s.pre_roll_ms)
    p.add_argument("--tail-ms", type=int, default=s.tail_ms)
    p.add_argument("--pause-ms", type=int, default=s.pause_ms)
    p.add_argument("--min-silence-ms", type=int, default=s.min_silence_ms)
    p.add_argument("--max-utterance-s", type=float, default=s.max_utterance_s)
    p.add_argument("--context", choices=["none", "finals"], default="none")
    p.add_argument("--hotwords", nargs="*", default=[])
    p.add_argument("--no-partials", action="store_true")
    return p.parse_args()


def configs(a: argparse.Namespace) -> list[Config]:
    models = a.model or (["tiny.en"] if a.quick else ["tiny.en", "base"])
    paths = a.path or (["wideband"] if a.quick else ["wideband", "telephone"])
    seg = SegmenterOptions(
        pre_roll_ms=a.pre_roll_ms,
        tail_ms=a.tail_ms,
        pause_ms=a.pause_ms,
        min_silence_ms=a.min_silence_ms,
        max_utterance_s=a.max_utterance_s,
    )
    sc = StreamConfig(seg, not a.no_partials, a.context, hotwords=tuple(a.hotwords))
    return [
        Config(m, p, WhisperOptions(m, beam_size=a.beam, min_window_s=a.min_window_s, pad_s=a.pad_s), sc)
        for m in models
        for p in paths
    ]  # fmt: skip


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse()
    pool = items()
    calls = compose_calls(pool)
    runs: list[dict[str, Any]] = []
    out = {"machine": machine(), "runs": runs}
    print(f"machine: {out['machine']}")
    for cfg in configs(args):
        r = run_config(cfg, pool, calls)
        print_report(r)
        runs.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
