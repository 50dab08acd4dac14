"""Diarization of one mixed channel: DER and speaker-change delay, on real and scripted voices.

``python -m bench.bench_diarize [--json]`` runs the product's path offline and in audio order:
Silero VAD + ``Segmenter`` (server defaults) over the mono mix, the GE2E encoder on each
utterance, ``Diarizer.decide`` per utterance, exactly as ``diarize()`` does in a call. Sets:

- ``ami``: the two AMI meeting excerpts of ``../shared/real-speech/conversation/`` (real voices,
  30 s each, RTTM turns; evaluation only). The product's labels are roles (rep/customer), AMI's
  are MEE009/MEE012, so hypotheses are mapped to references by the better of the 2 mappings.
- ``espeak``: scripted calls (``bench.card_scripts``, ``clients.callgen.DEMO_CALL``) rendered
  with two espeak-ng voices and summed to one channel; scored with the roles as they are
  (``rep`` must be the rep: the first voice is declared the rep) and with the better mapping.

DER is frame-based at 10 ms: (missed + false alarm + confusion) / reference speech, overlap
scored (each reference speaker of a frame counts), with a 0.25 s collar around every
reference boundary (NIST convention) and with none. An ``unknown`` decision counts as missed
speech (it labels no one), and ``unknown_share`` says how much. Change delay: for every turn
whose speaker differs from the turn before, the audio time at which the server had a
confident label of the new speaker for speech inside that turn (the VAD's end of utterance +
embedding), minus the turn's start; a change with no such label within the turn is missed.
The label of an utterance exists once its end is known: ``label_after_clip_end`` is that
time minus the end of the utterance's clip (the segmenter's hangover plus the embedding).
``--telephone`` first puts every call through an 8 kHz mu-law line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from audio.chunk import SAMPLE_RATE_HZ, Samples
from audio.diarize import Diarizer, DiarizerOptions, VoiceEncoder
from audio.segmenter import Segmenter, SegmenterOptions, UtteranceEnded
from audio.vad import DetectorFactory

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-speech"
FRAME_S = 0.01


@dataclass(frozen=True, slots=True)
class Turn:
    speaker: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Labelled:
    """One utterance as the server labelled it, and when (audio time) the label existed."""

    speaker: str
    start_s: float
    end_s: float
    decided_s: float
    confidence: float


def label(
    audio: Samples,
    detectors: DetectorFactory,
    encoder: VoiceEncoder,
    options: DiarizerOptions,
    segmenter: SegmenterOptions | None = None,
) -> tuple[list[Labelled], float]:
    """The mono ``audio`` through VAD, segmenter and diarizer, as a call would be; and the
    embedding's compute seconds (its wall time, added to each decision's audio time)."""
    detector = detectors()
    seg = Segmenter("unknown", segmenter or SegmenterOptions())
    diarizer = Diarizer(options)
    n = detector.frame_samples
    out: list[Labelled] = []
    compute_s = 0.0
    for i in range(0, len(audio) - n + 1, n):
        frame = np.ascontiguousarray(audio[i : i + n], np.float32)
        events = seg.feed(frame, detector.probability(frame))
        if i + 2 * n > len(audio):
            events += seg.finish()
        for event in events:
            if isinstance(event, UtteranceEnded):
                t0 = time.perf_counter()
                windows = encoder.embed(event.samples)
                spent = time.perf_counter() - t0
                compute_s += spent
                d = diarizer.decide(windows, len(event.samples) / SAMPLE_RATE_HZ)
                out.append(
                    Labelled(
                        d.speaker,
                        event.start_sample / SAMPLE_RATE_HZ,
                        event.end_sample / SAMPLE_RATE_HZ,
                        (i + n) / SAMPLE_RATE_HZ + spent,
                        d.confidence,
                    )
                )
    return out, compute_s


def _frames(turns: Sequence[Turn], duration_s: float) -> list[set[str]]:
    frames: list[set[str]] = [set() for _ in range(int(duration_s / FRAME_S) + 1)]
    for t in turns:
        for k in range(int(t.start_s / FRAME_S), min(len(frames), int(t.end_s / FRAME_S))):
            frames[k].add(t.speaker)
    return frames


def der(
    ref: Sequence[Turn],
    hyp: Sequence[Labelled],
    duration_s: float,
    collar_s: float,
    mapping: dict[str, str],
) -> dict[str, float]:
    """Frame DER of ``hyp`` (labels renamed by ``mapping``; ``unknown`` is no speaker)."""
    r = _frames(ref, duration_s)
    h = _frames(
        [
            Turn(mapping.get(u.speaker, "?"), u.start_s, u.end_s)
            for u in hyp
            if u.speaker != "unknown"
        ],
        duration_s,
    )
    unknown = _frames(
        [Turn("unknown", u.start_s, u.end_s) for u in hyp if u.speaker == "unknown"], duration_s
    )
    scored = np.ones(len(r), bool)
    for t in ref:
        for edge in (t.start_s, t.end_s):
            lo, hi = int((edge - collar_s) / FRAME_S), int((edge + collar_s) / FRAME_S)
            scored[max(0, lo) : max(0, hi)] = False
    miss = fa = conf = total = unk = 0
    for k in np.flatnonzero(scored):
        rs, hs = r[k], h[k]
        total += len(rs)
        miss += max(0, len(rs) - len(hs))
        fa += max(0, len(hs) - len(rs))
        conf += min(len(rs), len(hs)) - len(rs & hs)
        unk += len(rs) if unknown[k] and not hs else 0
    total = max(total, 1)
    return {
        "der": round((miss + fa + conf) / total, 4),
        "missed": round(miss / total, 4),
        "false_alarm": round(fa / total, 4),
        "confusion": round(conf / total, 4),
        "unknown_share": round(unk / total, 4),
        "scored_speech_s": round(total * FRAME_S, 2),
    }


def best_mapping(ref: Sequence[Turn], hyp: Sequence[Labelled], duration_s: float) -> dict[str, str]:
    speakers = sorted({t.speaker for t in ref})
    a, b = [*speakers, "?"][:2]
    options = [{"rep": a, "customer": b}, {"rep": b, "customer": a}]
    return min(options, key=lambda m: der(ref, hyp, duration_s, 0.0, m)["der"])


def change_delays(
    ref: Sequence[Turn], hyp: Sequence[Labelled], mapping: dict[str, str]
) -> list[float | None]:
    """Per speaker change in ``ref``: seconds from the new turn's start to the first confident
    label of its speaker on an utterance overlapping the turn; None: never within the turn."""
    turns = sorted(ref, key=lambda t: t.start_s)
    delays: list[float | None] = []
    for prev, turn in itertools.pairwise(turns):
        if turn.speaker == prev.speaker or turn.end_s - turn.start_s < 0.5:
            continue  # no change, or a backchannel too short to carry a voice
        hits = [
            u.decided_s - turn.start_s
            for u in hyp
            if mapping.get(u.speaker) == turn.speaker
            and u.start_s < turn.end_s
            and u.end_s > turn.start_s
        ]
        delays.append(round(min(hits), 3) if hits else None)
    return delays


def ami_sets() -> list[tuple[str, Samples, list[Turn]]]:
    manifest = json.loads((REAL / "manifest.json").read_text())
    out = []
    for f in manifest["files"]:
        if f["id"].startswith("ami_ES2003") and not f["derived"]:
            audio, rate = sf.read(str(REAL / f["file"]), dtype="float32")
            assert rate == SAMPLE_RATE_HZ
            turns = [Turn(t["speaker"], t["start_s"], t["end_s"]) for t in f["speaker_turns"]]
            out.append((f["id"], audio, turns))
    return out


ESPEAK_PAIRS = (("en-us", "en-us+f3"), ("en-gb-scotland", "en-us+f2"))


def espeak_sets() -> list[tuple[str, Samples, list[Turn]]]:
    from bench.card_scripts import SCRIPTS
    from clients.callgen import DEMO_CALL, render
    from clients.callgen import Turn as CallTurn

    scripts = {"demo": DEMO_CALL}
    for name, lines in SCRIPTS.items():
        scripts[name] = tuple(CallTurn(t.speaker, t.text) for t in lines)
    out = []
    for rep_voice, customer_voice in ESPEAK_PAIRS:
        for name, turns in scripts.items():
            call = render(
                turns, voices={"rep": rep_voice, "customer": customer_voice, "unknown": rep_voice}
            )
            mono = np.clip(call.rep + call.customer, -1, 1).astype(np.float32)
            ref = [Turn(u.speaker, u.start_s, u.end_s) for u in call.utterances]
            out.append((f"{name}:{rep_voice}/{customer_voice}", mono, ref))
    return out


def telephone(audio: Samples) -> Samples:
    """The call as a phone line carries it: 8 kHz, mu-law, back to 16 kHz for the server."""
    import soxr

    narrow = np.clip(soxr.resample(audio, SAMPLE_RATE_HZ, 8000), -1, 1)
    mu = np.sign(narrow) * np.log1p(255 * np.abs(narrow)) / np.log1p(255)
    mu = np.round(mu * 127) / 127  # 8-bit code
    back = np.sign(mu) * np.expm1(np.abs(mu) * np.log1p(255)) / 255
    return soxr.resample(back.astype(np.float32), 8000, SAMPLE_RATE_HZ).astype(np.float32)


def evaluate(
    sets: list[tuple[str, Samples, list[Turn]]],
    detectors: DetectorFactory,
    encoder: VoiceEncoder,
    options: DiarizerOptions,
    roles_fixed: bool,
) -> dict[str, object]:
    rows = []
    delays: list[float | None] = []
    after_end: list[float] = []  # label time minus the end of the utterance's clip
    totals = {"audio_s": 0.0, "compute_s": 0.0, "utterances": 0}
    for name, audio, ref in sets:
        hyp, compute_s = label(audio, detectors, encoder, options)
        duration = len(audio) / SAMPLE_RATE_HZ
        mapping = best_mapping(ref, hyp, duration)
        role = {"rep": "rep", "customer": "customer"} if roles_fixed else mapping
        row = {
            "set": name,
            "collar_0.25": der(ref, hyp, duration, 0.25, role),
            "no_collar": der(ref, hyp, duration, 0.0, role),
            "utterances": len(hyp),
        }
        if roles_fixed:
            row["collar_0.25_best_mapping"] = der(ref, hyp, duration, 0.25, mapping)
        after_end += [u.decided_s - u.end_s for u in hyp]
        d = change_delays(ref, hyp, role)
        row["change_delays_s"] = d
        delays += d
        rows.append(row)
        totals["audio_s"] += duration
        totals["compute_s"] += compute_s
        totals["utterances"] += len(hyp)
    found = sorted(x for x in delays if x is not None)
    return {
        "files": rows,
        "der_collar_0.25": _pooled(rows, "collar_0.25"),
        "der_no_collar": _pooled(rows, "no_collar"),
        "changes": len(delays),
        "changes_missed": len(delays) - len(found),
        "change_delay_p50_s": _pct(found, 50),
        "change_delay_p90_s": _pct(found, 90),
        "label_after_clip_end_p50_s": _pct(after_end, 50),
        "label_after_clip_end_p90_s": _pct(after_end, 90),
        "encoder_ms_per_audio_s": round(
            1000 * totals["compute_s"] / max(totals["audio_s"], 1e-9), 1
        ),
    }


def _pooled(rows: list[dict[str, object]], key: str) -> dict[str, float]:
    """Speech-weighted means over files (each file's figure times its scored speech)."""
    parts = [r[key] for r in rows]
    weights = np.array([p["scored_speech_s"] for p in parts])  # type: ignore[index]
    out = {}
    for field in ("der", "missed", "false_alarm", "confusion", "unknown_share"):
        vals = np.array([p[field] for p in parts])  # type: ignore[index]
        out[field] = round(float((vals * weights).sum() / max(weights.sum(), 1e-9)), 4)
    return out


def _pct(xs: list[float], q: int) -> float | None:
    return round(float(np.percentile(xs, q)), 3) if xs else None


def machine() -> dict[str, object]:
    model = "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            if key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    import os

    return {
        "cpu": model,
        "avx512f": "avx512f" in flags,
        "cores": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sets", default="ami,espeak")
    parser.add_argument("--telephone", action="store_true", help="8 kHz mu-law first")
    args = parser.parse_args(argv)
    from models.registry import load_detectors, load_voice_encoder

    encoder = load_voice_encoder()
    encoder.warmup()
    detectors = load_detectors("silero")
    options = DiarizerOptions()
    report: dict[str, Any] = {"machine": machine(), "options": asdict(options)}
    line = telephone if args.telephone else (lambda a: a)
    report["telephone"] = args.telephone
    if "ami" in args.sets:
        ami = [(n, line(a), r) for n, a, r in ami_sets()]
        report["ami"] = evaluate(ami, detectors, encoder, options, roles_fixed=False)
    if "espeak" in args.sets:
        calls = [(n, line(a), r) for n, a, r in espeak_sets()]
        report["espeak"] = evaluate(calls, detectors, encoder, options, roles_fixed=True)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key in ("ami", "espeak"):
            if key in report:
                r = report[key]
                print(key, json.dumps({k: v for k, v in r.items() if k != "files"}))
                for row in r["files"]:
                    print("  ", row["set"], row["collar_0.25"], "delays", row["change_delays_s"])
        print(report["machine"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
