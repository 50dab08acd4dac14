"""Per-utterance latency of the intent classifier and the full text analysis on one core.

Usage: python bench/bench_text.py [--threads 1] [--repeat 3]

Utterances are the held-out split (nlp/data/intents_test.jsonl), one at a time (batch 1, as
in a live call), after a warm-up that is excluded from the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time

import numpy as np

from models.registry import load_embedder
from nlp.analyze import load_analyzer
from nlp.intent import DATA_DIR, EmbeddingIntentClassifier, IntentOptions, load_examples


def _percentiles(samples_s: list[float]) -> str:
    ms = np.array(samples_s) * 1e3
    return f"{np.percentile(ms, 50):6.2f} {np.percentile(ms, 95):6.2f} {ms.max():7.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    texts = [e.text for e in load_examples(DATA_DIR / "intents_test.jsonl")]
    embedder = load_embedder(threads=args.threads)
    classifier = EmbeddingIntentClassifier.load(embedder, IntentOptions())
    analyzer = load_analyzer(embedder)
    analyzer.warmup()
    day = dt.date(2025, 3, 12)
    clf_s, full_s = [], []
    for _ in range(args.repeat):
        for t in texts:
            t0 = time.perf_counter()
            classifier.classify([t])
            t1 = time.perf_counter()
            analyzer.analyze(t, call_date=day)
            full_s.append(time.perf_counter() - t1)
            clf_s.append(t1 - t0)
    words = [len(t.split()) for t in texts]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, onnxruntime threads={args.threads}"
    )
    print(
        f"utterances: {len(texts)} x {args.repeat}, words median {int(np.median(words))}, "
        f"max {max(words)}"
    )
    print(f"{'stage':<32} {'p50 ms':>6} {'p95 ms':>6} {'max ms':>7}")
    print(f"{'intent classifier':<32} {_percentiles(clf_s)}")
    print(f"{'analyze (intent+entities+sent.)':<32} {_percentiles(full_s)}")


if __name__ == "__main__":
    main()
