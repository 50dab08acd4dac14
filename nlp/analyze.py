"""The text half of an ``insight``: intent + entities + sentiment, and its two CLI commands.

``Analyzer.analyze`` is synchronous and blocking (one embedding per utterance); run it in the
model's executor. ``cuecard analyze`` classifies from a shell; ``cuecard train-intent``
retrains the intent head and rewrites ``nlp/data/intent_report.md`` (fixed seed: same data,
same head, same report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from nlp.entities import DEFAULT_COMPETITORS, extract_entities
from nlp.insight import Entity, IntentResult
from nlp.intent import (
    DATA_DIR,
    EmbeddingIntentClassifier,
    HeadParams,
    IntentClassifier,
    IntentOptions,
    Metrics,
    SentenceEmbedder,
    cross_validate,
    load_examples,
    score_predictions,
    train_head,
)
from nlp.sentiment import (
    IntentValenceSentiment,
    SentimentScorer,
    lexicon_baseline,
    polarity_accuracy,
    target_of,
    valence_from_examples,
)

MAX_TEXT_CHARS = 2000  # ~400 words; the embedder reads 128 tokens anyway


@dataclass(frozen=True, slots=True)
class TextAnalysis:
    intent: IntentResult
    entities: tuple[Entity, ...]
    sentiment: float


@dataclass(frozen=True, slots=True)
class AnalyzerOptions:
    competitors: Mapping[str, Sequence[str]] = field(default_factory=lambda: DEFAULT_COMPETITORS)


class Analyzer:
    """Classifier + entity rules + sentiment for one utterance; blocking.

    Sentiment comes from ``sentiment`` when given, else from the intent scores
    (``IntentValenceSentiment``: no second model call).
    """

    def __init__(
        self,
        classifier: IntentClassifier,
        options: AnalyzerOptions,
        *,
        sentiment: SentimentScorer | None = None,
        valence: IntentValenceSentiment | None = None,
    ) -> None:
        self._classifier = classifier
        self._options = options
        self._sentiment = sentiment
        self._valence = valence or IntentValenceSentiment()

    def warmup(self) -> None:
        self._classifier.warmup()
        if self._sentiment is not None:
            self._sentiment.warmup()

    def analyze(self, text: str, *, call_date: dt.date) -> TextAnalysis:
        return self.analyze_many([text], call_date=call_date)[0]

    def analyze_many(self, texts: Sequence[str], *, call_date: dt.date) -> list[TextAnalysis]:
        cut = [t[:MAX_TEXT_CHARS] for t in texts]
        intents = self._classifier.classify(cut)
        if self._sentiment is not None:
            sentiments = self._sentiment.score(cut)
        else:
            sentiments = [self._valence.of(r) for r in intents]
        return [
            TextAnalysis(
                intent,
                extract_entities(t, call_date=call_date, competitors=self._options.competitors),
                s,
            )
            for t, intent, s in zip(cut, intents, sentiments, strict=True)
        ]


def load_embedder(*, threads: int = 1, cache_dir: Path | None = None) -> SentenceEmbedder:
    """The packaged all-MiniLM-L6-v2 on onnxruntime; the concrete model is imported here only."""
    from models.minilm import MiniLMEmbedder, MiniLMOptions

    return MiniLMEmbedder(MiniLMOptions(intra_op_threads=threads, cache_dir=cache_dir))


def load_analyzer(
    embedder: SentenceEmbedder,
    *,
    intent: IntentOptions | None = None,
    options: AnalyzerOptions | None = None,
    data_path: Path = DATA_DIR / "intents.jsonl",
) -> Analyzer:
    """The default analyzer; label valences come from ``data_path`` (the user's labels too)."""
    classifier = EmbeddingIntentClassifier.load(embedder, intent or IntentOptions())
    valence = IntentValenceSentiment(valence_from_examples(load_examples(data_path)))
    return Analyzer(classifier, options or AnalyzerOptions(), valence=valence)


# ---- cuecard analyze --------------------------------------------------------------------


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
    t.add_argument("--data", type=Path, default=DATA_DIR / "intents.jsonl")
    t.add_argument("--test", type=Path, default=DATA_DIR / "intents_test.jsonl")
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


# ---- cuecard train-intent -------------------------------------------------------------

_GRID = [HeadParams(l2=l2, word_scale=s) for s in (0.0, 0.5, 1.0, 1.5) for l2 in (3e-5, 1e-4, 3e-4)]


def train_command(args: argparse.Namespace) -> int:
    embedder = load_embedder(threads=args.threads)
    report = train_and_report(
        embedder, args.data, args.test, head_path=args.head, folds=args.folds, seed=args.seed
    )
    args.report.write_text(report, encoding="utf-8")
    print(f"wrote {args.head} and {args.report}")
    return 0


def train_and_report(
    embedder: SentenceEmbedder,
    data_path: Path,
    test_path: Path,
    *,
    head_path: Path,
    folds: int,
    seed: int,
) -> str:
    """Pick head parameters by stratified CV on the train split only, fit on all of it, save
    the head, and score the held-out split once. Returns the markdown report."""
    train, test = load_examples(data_path), load_examples(test_path)
    train_texts = {e.text.lower() for e in train}
    leaked = [e.text for e in test if e.text.lower() in train_texts]
    if leaked:
        raise ValueError(f"{len(leaked)} held-out texts also appear in train, e.g. {leaked[0]!r}")
    x_train = embedder.embed([e.text for e in train])
    x_test = embedder.embed([e.text for e in test])
    texts, labels = [e.text for e in train], [e.label for e in train]
    cv = [(p, cross_validate(x_train, texts, labels, p, k=folds, seed=seed)) for p in _GRID]
    best_params, best_cv = max(cv, key=lambda pc: pc[1].macro_f1)
    head = train_head(x_train, texts, labels, best_params)
    head.save(head_path)
    probs = head.probabilities(x_test, [e.text for e in test])
    predicted = [head.labels[int(i)] for i in probs.argmax(axis=1)]
    held = score_predictions([e.label for e in test], predicted, head.labels)
    sentiment = _sentiment_rows(train, test, head.labels, probs)
    thresholds = _threshold_rows([e.label for e in test], predicted, probs.max(axis=1))
    return _render(
        embedder.name,
        data_path,
        test_path,
        len(train),
        len(test),
        folds,
        seed,
        cv,
        best_params,
        best_cv,
        held,
        sentiment,
        thresholds,
    )


def _sentiment_rows(
    train: Sequence[Any], test: Sequence[Any], labels: Sequence[str], probs: np.ndarray[Any, Any]
) -> list[tuple[str, str]]:
    truth = [target_of(e) for e in test]
    valence = valence_from_examples(train)
    ours = list(probs @ np.array([valence.get(lab, 0.0) for lab in labels]))
    rows = [("Cuecard (intent-valence)", f"{polarity_accuracy(ours, truth):.3f}")]
    vader = lexicon_baseline([e.text for e in test])
    rows.append(
        ("VADER (generic lexicon)", f"{polarity_accuracy(vader, truth):.3f}")
        if vader is not None
        else ("VADER (generic lexicon)", "not installed (`pip install vaderSentiment`)")
    )
    return rows


def _threshold_rows(
    truth: Sequence[str], predicted: Sequence[str], top: np.ndarray[Any, Any]
) -> list[tuple[float, float, float]]:
    """Coverage and accuracy on the confident part for a few ``min_confidence`` values."""
    rows = []
    for t in (0.0, 0.3, 0.4, 0.5, 0.6):
        keep = top >= t
        acc = float(np.mean([p == y for p, y, k in zip(predicted, truth, keep, strict=True) if k]))
        rows.append((t, float(keep.mean()), acc))
    return rows


def _metrics_table(m: Metrics) -> list[str]:
    lines = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for lab, v in m.per_label.items():
        lines.append(f"| {lab} | {v.precision:.3f} | {v.recall:.3f} | {v.f1:.3f} | {v.support} |")
    lines.append(
        f"| **macro** | | | **{m.macro_f1:.3f}** | {sum(v.support for v in m.per_label.values())} |"
    )
    return lines


def _confusion(m: Metrics) -> list[str]:
    short = [lab.replace("objection_", "obj_") for lab in m.labels]
    lines = ["| true \\ predicted | " + " | ".join(short) + " |", "|---" * (len(short) + 1) + "|"]
    for lab, row in zip(short, m.confusion, strict=True):
        lines.append(f"| {lab} | " + " | ".join(str(v) if v else "." for v in row) + " |")
    return lines


def _render(
    embedder_name: str,
    data_path: Path,
    test_path: Path,
    n_train: int,
    n_test: int,
    folds: int,
    seed: int,
    cv: Sequence[tuple[HeadParams, Metrics]],
    best: HeadParams,
    best_cv: Metrics,
    held: Metrics,
    sentiment: Sequence[tuple[str, str]],
    thresholds: Sequence[tuple[float, float, float]],
) -> str:
    out = [
        "# Intent classifier evaluation",
        "",
        "Produced by `cuecard train-intent` (fixed seed; rerun it after editing the data).",
        f"Model: {embedder_name} embeddings + tf-idf word uni/bigrams -> softmax head. "
        f"Train: `{data_path.name}` ({n_train} lines), held-out test: `{test_path.name}` "
        f"({n_test} lines, phrased independently, never used for training or model selection).",
        "",
        f"## Model selection: {folds}-fold stratified CV on the train split (seed {seed})",
        "",
        "| l2 | word-feature scale | CV macro-F1 | CV accuracy |",
        "|---|---|---|---|",
        *(f"| {p.l2:g} | {p.word_scale:g} | {m.macro_f1:.3f} | {m.accuracy:.3f} |" for p, m in cv),
        "",
        f"Chosen: l2={best.l2:g}, word-feature scale={best.word_scale:g} "
        f"(CV macro-F1 **{best_cv.macro_f1:.3f}**). Per label, out-of-fold:",
        "",
        *_metrics_table(best_cv),
        "",
        "## Held-out test split",
        "",
        f"Macro-F1 **{held.macro_f1:.3f}**, accuracy {held.accuracy:.3f}.",
        "",
        *_metrics_table(held),
        "",
        "Confusion matrix (rows: true label; columns: predicted):",
        "",
        *_confusion(held),
        "",
        "## Low-confidence cut-off (held-out)",
        "",
        "With `IntentOptions.min_confidence = t`, predictions below t become `other`.",
        "",
        "| t | share kept | accuracy of kept |",
        "|---|---|---|",
        *(f"| {t:.1f} | {cov:.3f} | {acc:.3f} |" for t, cov, acc in thresholds),
        "",
        "## Sentiment polarity (held-out)",
        "",
        "Polarity (negative <= -0.25 < neutral < 0.25 <= positive) against each line's "
        "`sentiment` (or its label's valence).",
        "",
        "| scorer | polarity accuracy |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in sentiment),
        "",
    ]
    return "\n".join(out)
