"""``cuecard analyze`` and ``cuecard train-intent``: the intent model from a shell.

``analyze`` classifies one utterance or one per stdin line (label, confidence, every label's
score, sentiment, entities). ``train-intent`` retrains the intent head and rewrites
``nlp/data/intent_report.md`` (protocol in ``server/intent_train.py``; fixed seed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from models.registry import load_embedder
from nlp.analyze import MAX_TEXT_CHARS, TextAnalysis, load_analyzer
from nlp.intent import DATA_DIR, IntentOptions
from server.intent_train import default_dev_path

TRAIN_FILES = (DATA_DIR / "intents.jsonl", DATA_DIR / "intents_varied.jsonl")


def register(subparsers: Any) -> None:
    """Add ``analyze`` and ``train-intent`` to a ``cuecard`` argparse subparsers object."""
    p = subparsers.add_parser("analyze", help="classify one utterance, or one per stdin line")
    p.add_argument("text", nargs="?", help="the utterance; omitted: read lines from stdin")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--call-date",
        type=dt.date.fromisoformat,
        default=None,
        help="resolve relative dates against this ISO date (default: today)",
    )
    p.add_argument("--head", type=Path, default=IntentOptions().head_path)
    p.add_argument(
        "--data",
        type=Path,
        default=DATA_DIR / "intents.jsonl",
        help="data file the label valences (sentiment) are read from",
    )
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=analyze_command)
    t = subparsers.add_parser("train-intent", help="retrain the intent head and write its report")
    t.add_argument("--data", type=Path, nargs="+", default=list(TRAIN_FILES))
    t.add_argument("--test", type=Path, default=DATA_DIR / "intents_test.jsonl")
    t.add_argument(
        "--dev",
        type=Path,
        default=default_dev_path(),
        help="outside development set (intent-dev TSV) to score on; never trained on",
    )
    t.add_argument("--head", type=Path, default=IntentOptions().head_path)
    t.add_argument("--report", type=Path, default=DATA_DIR / "intent_report.md")
    t.add_argument("--folds", type=int, default=5)
    t.add_argument("--seed", type=int, default=13)
    t.add_argument("--threads", type=int, default=2)
    t.set_defaults(func=train_command)


def analyze_command(
    args: argparse.Namespace, *, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    """Print one line per utterance; exit 0, or 2 with a message when there is no input."""
    out = stdout or sys.stdout
    if args.text is not None:
        texts = [args.text]
    else:
        texts = [line.rstrip("\r\n") for line in _stdin_text(stdin)]
        texts = [t for t in texts if t.strip()]
        if not texts:
            print(
                "cuecard analyze: no text given (pass TEXT or pipe lines on stdin)", file=sys.stderr
            )
            return 2
    analyzer = load_analyzer(
        load_embedder(threads=args.threads),
        intent=IntentOptions(head_path=args.head),
        data_path=args.data,
    )
    call_date = args.call_date or dt.date.today()
    for text, result in zip(texts, analyzer.analyze_many(texts, call_date=call_date), strict=True):
        out.write(_format(text, result, as_json=args.json) + "\n")
    out.flush()
    return 0


def _stdin_text(stdin: TextIO | None) -> list[str]:
    """Lines of stdin decoded as UTF-8 with replacement: binary junk never raises."""
    src = stdin or sys.stdin
    buffer = getattr(src, "buffer", None)
    raw = buffer.read() if buffer is not None else src.read().encode("utf-8", "replace")
    text = raw.replace(b"\x00", b" ").decode("utf-8", errors="replace")
    return io.StringIO(text).read().splitlines()


def _format(text: str, a: TextAnalysis, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "text": text[:MAX_TEXT_CHARS],
                "truncated": len(text) > MAX_TEXT_CHARS,
                "label": a.intent.label,
                "confidence": round(a.intent.confidence, 4),
                "scores": {k: round(v, 4) for k, v in a.intent.scores.items()},
                "sentiment": round(a.sentiment, 4),
                "entities": [
                    {
                        "kind": e.kind,
                        "text": e.text,
                        "value": e.value,
                        "start_char": e.start_char,
                        "end_char": e.end_char,
                    }
                    for e in a.entities
                ],
            },
            ensure_ascii=False,
        )
    ents = ", ".join(f"{e.kind}={e.value}" for e in a.entities)
    shown = text if len(text) <= 80 else text[:77] + "..."
    return (
        f"{a.intent.label:<21} {a.intent.confidence:5.2f}  sentiment {a.sentiment:+.2f}"
        f"  {shown!r}" + (f"  [{ents}]" if ents else "")
    )


def train_command(args: argparse.Namespace) -> int:
    from server.intent_report import train_and_report

    report = train_and_report(
        load_embedder(threads=args.threads),
        args.data,
        args.test,
        head_path=args.head,
        folds=args.folds,
        seed=args.seed,
        dev_path=args.dev,
    )
    args.report.write_text(report, encoding="utf-8")
    print(f"wrote {args.head} and {args.report}")
    return 0
