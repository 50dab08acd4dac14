"""Score the shipped intent head: per-label P/R/F1 + support, accuracy, macro-F1, confusion
matrix and calibration (ECE), on the held-out split and on intent-dev (all rows, clear subset).

Usage: python -m bench.eval_intent [--dev PATH] [--head PATH] [--threads 2]

The shipped head never trains on intent-dev, so its figures there are honest. For the
leave-one-source-out figures (dev rows in training except the scored source) and model
selection, run `cuecard train-intent --head /tmp/h.npz --report /tmp/r.md` (several minutes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.registry import load_embedder
from nlp.intent import DATA_DIR, IntentOptions, LinearHead, load_examples
from server.intent_report import score, section
from server.intent_train import default_dev_path, load_dev, logits_on


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", type=Path, default=default_dev_path())
    ap.add_argument("--head", type=Path, default=IntentOptions().head_path)
    ap.add_argument("--test", type=Path, default=DATA_DIR / "intents_test.jsonl")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    embedder = load_embedder(threads=args.threads)
    head = LinearHead.load(args.head)
    labels = list(head.labels)
    test = load_examples(args.test)
    texts = [e.text for e in test]
    lg = logits_on(head, labels, embedder.embed(texts).astype(np.float64), texts)
    own = score("held-out", lg, [e.label for e in test], labels, head.temperature)
    out = section(f"Held-out `{args.test.name}`", own)
    if args.dev is not None:
        dev = load_dev(args.dev)
        dtexts = [r.text for r in dev]
        dlg = logits_on(head, labels, embedder.embed(dtexts).astype(np.float64), dtexts)
        s = score("dev", dlg, [r.label for r in dev], labels, head.temperature, dev)
        out += section(f"intent-dev `{args.dev}` ({len(dev)} rows)", s)
        out.append(f"ECE (10 bins): held-out {own.ece:.3f}, intent-dev {s.ece:.3f}")
    print("\n".join(out))
    print(f"head: {args.head} (temperature {head.temperature:.2f}), embedder: {embedder.name}")


if __name__ == "__main__":
    main()
