"""Time ``ProsodyTracker.observe`` per utterance on espeak-ng speech (target: p95 <= 20 ms).

    python bench/bench_prosody.py [--repeats 5] [--json bench/results/prosody.json]

Renders a set of sentences at several pitches, rates and amplitudes (1-8 s each), warms the
tracker up once (excluded), then times every ``observe`` call with ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio.chunk import SAMPLE_RATE_HZ, Samples
from audio.prosody import ProsodyTracker

SENTENCES = (
    "Yes.",
    "I think the price is a little high for our team right now.",
    "Can you tell me more about how the onboarding works?",
    "We already use another vendor for most of this, and honestly it works fine for us.",
    "Let me check with my manager and get back to you next week, probably on Thursday.",
    "How long does the contract last, and can we cancel early if the rollout does not go "
    "well, or if our budget gets cut in the second half of the year?",
)
VOICES = ((50, 175, 100), (80, 240, 170), (25, 120, 50), (60, 150, 130))


def render(text: str, pitch: int, rate_wpm: int, amplitude: int, folder: Path) -> Samples:
    out = folder / "clip.wav"
    args = ["-v", "en-us", "-p", str(pitch), "-s", str(rate_wpm), "-a", str(amplitude)]
    subprocess.run(["espeak-ng", *args, "-w", str(out), text], check=True)
    x, sr = sf.read(out, dtype="float32")
    return np.asarray(soxr.resample(x, sr, SAMPLE_RATE_HZ), dtype=np.float32)


def even_spans(clip: Samples, n_words: int) -> list[tuple[float, float]]:
    audible = np.flatnonzero(np.abs(clip) > 0.01)
    start_s, end_s = audible[0] / SAMPLE_RATE_HZ, audible[-1] / SAMPLE_RATE_HZ
    width = (end_s - start_s) / n_words
    return [(start_s + i * width, start_s + (i + 1) * width) for i in range(n_words)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        clips = [
            (render(text, *voice, Path(tmp)), len(text.split()))
            for text in SENTENCES
            for voice in VOICES
        ]
    tracker = ProsodyTracker()
    started = time.perf_counter()
    tracker.warmup()
    warmup_s = time.perf_counter() - started

    ms: list[float] = []
    audio_s: list[float] = []
    for _ in range(args.repeats):
        for clip, n_words in clips:
            spans = even_spans(clip, n_words)
            started = time.perf_counter()
            tracker.observe("customer", clip, spans)
            ms.append((time.perf_counter() - started) * 1000)
            audio_s.append(len(clip) / SAMPLE_RATE_HZ)
    result = {
        "utterances": len(ms),
        "audio_s_mean": round(float(np.mean(audio_s)), 2),
        "audio_s_max": round(float(np.max(audio_s)), 2),
        "observe_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "observe_ms_p95": round(float(np.percentile(ms, 95)), 2),
        "observe_ms_max": round(float(np.max(ms)), 2),
        "ms_per_audio_s": round(float(np.sum(ms) / np.sum(audio_s)), 3),
        "warmup_s": round(warmup_s, 2),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
