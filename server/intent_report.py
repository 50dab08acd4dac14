"""``train_and_report``: train the intent head, evaluate it honestly, render the markdown report.

The protocol is in ``server/intent_train.py``; this module runs it and writes the figures
(``nlp/data/intent_report.md`` by default). Every figure on outside rows comes from a head that
never saw them: a head trained without the dev set, and leave-one-source-out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlp.intent import (
    Example,
    FloatArray,
    HeadParams,
    Metrics,
    SentenceEmbedder,
    expected_calibration_error,
    load_examples,
    score_predictions,
)
from nlp.sentiment import lexicon_baseline, polarity_accuracy, target_of, valence_from_examples
from server.intent_train import (
    GRID,
    DevRow,
    Rows,
    calibrated,
    fit,
    load_dev,
    logits_on,
    near_duplicates,
    out_of_fold,
    own_folds,
    predicted,
    source_folds,
    temperature_of,
)


@dataclass(frozen=True, slots=True)
class Scored:
    """Predictions of one evaluation: metrics on all rows and on the clear subset."""

    name: str
    all: Metrics
    clear: Metrics | None
    ece: float
    per_source: tuple[tuple[str, float, int], ...]


def score(
    name: str,
    logits: FloatArray,
    truth: Sequence[str],
    labels: Sequence[str],
    temperature: float,
    dev: Sequence[DevRow] | None = None,
) -> Scored:
    pred = predicted(logits, labels)
    probs = calibrated(logits, temperature)
    correct = np.array([p == t for p, t in zip(pred, truth, strict=True)], dtype=np.float64)
    ece = expected_calibration_error(probs.max(axis=1), correct)
    m_all = score_predictions(truth, pred, labels)
    if dev is None:
        return Scored(name, m_all, None, ece, ())
    keep = [i for i, d in enumerate(dev) if d.clear]
    m_clear = score_predictions([truth[i] for i in keep], [pred[i] for i in keep], labels)
    per_source = []
    for src, idx in source_folds([d.source for d in dev]).items():
        per_source.append((src, float(correct[idx].mean()), len(idx)))
    return Scored(name, m_all, m_clear, ece, tuple(per_source))


def load_train(paths: Sequence[Path], test_path: Path) -> tuple[list[Example], list[Example]]:
    """Train and test examples; refuses a train line that near-duplicates a test line."""
    train = [e for p in paths for e in load_examples(p)]
    test = load_examples(test_path)
    leaked = near_duplicates([e.text for e in train], [e.text for e in test])
    if leaked:
        a, b = leaked[0]
        raise ValueError(
            f"{len(leaked)} train lines near-duplicate held-out ones, e.g. {a!r} ~ {b!r}"
        )
    return train, test


def train_and_report(
    embedder: SentenceEmbedder,
    data_paths: Sequence[Path],
    test_path: Path,
    *,
    head_path: Path,
    folds: int,
    seed: int,
    dev_path: Path | None,
    grid: Sequence[HeadParams] = GRID,
) -> str:
    """Select, fit, calibrate and save the head (never on dev rows); return the report."""
    train, test = load_train(data_paths, test_path)
    rows = Rows.embed(embedder, [e.text for e in train], [e.label for e in train], seed)
    held = Rows.embed(embedder, [e.text for e in test], [e.label for e in test], seed + 1)
    labels = sorted(set(rows.labels))
    cv_folds = own_folds(train, folds, seed)
    cv = []
    for p in grid:
        oof = out_of_fold(rows, cv_folds, p, labels)
        cv.append((p, oof, score_predictions(rows.labels, predicted(oof, labels), labels)))
    best, best_oof, best_cv = max(cv, key=lambda c: c[2].macro_f1)
    t = temperature_of(best_oof, rows.labels, labels)
    head = fit(rows, best).with_temperature(t)
    head.save(head_path)
    held_logits = logits_on(head, labels, held.x, held.texts)
    own = score("held-out", held_logits, held.labels, labels, t)
    outside: list[tuple[Scored, FloatArray]] = []
    n_dev = 0
    if dev_path is not None:
        dev = load_dev(dev_path)
        n_dev = len(dev)
        d = Rows.embed(embedder, [r.text for r in dev], [r.label for r in dev], seed + 2)
        plain = logits_on(head, labels, d.x, d.texts)
        by_source = list(source_folds([r.source for r in dev]).values())
        loso = out_of_fold(d, by_source, best, labels, extra=rows)
        for name, lg in (("trained without intent-dev", plain), ("leave-one-source-out", loso)):
            outside.append((score(name, lg, d.labels, labels, t, dev), calibrated(lg, t)))
    header = Header(
        embedder.name,
        tuple(data_paths),
        test_path,
        dev_path,
        len(train),
        len(test),
        n_dev,
        folds,
        seed,
    )
    held_probs = calibrated(held_logits, t)
    body = [
        *_selection(header, [(p, m) for p, _, m in cv], best, best_cv),
        *section("Held-out test split", own),
        *_calibration(t, own, outside),
        *_thresholds("held-out", held.labels, held_probs, labels),
    ]
    if outside:
        for scored, _ in outside:
            body += section(f"intent-dev, {scored.name}", scored)
        body += _thresholds("intent-dev, trained without it", d.labels, outside[0][1], labels)
    body += _sentiment(train, test, labels, held_probs)
    return "\n".join(body) + "\n"


@dataclass(frozen=True, slots=True)
class Header:
    embedder: str
    data_paths: tuple[Path, ...]
    test_path: Path
    dev_path: Path | None
    n_train: int
    n_test: int
    n_dev: int
    folds: int
    seed: int


def _selection(
    h: Header, cv: Sequence[tuple[HeadParams, Metrics]], best: HeadParams, best_cv: Metrics
) -> list[str]:
    files = ", ".join(f"`{p.name}`" for p in h.data_paths)
    dev = f"`{h.dev_path.name}` ({h.n_dev} rows)" if h.dev_path is not None else "not given"
    return [
        "# Intent classifier evaluation",
        "",
        "Produced by `cuecard train-intent` (fixed seed; rerun it after editing the data); "
        "`python -m bench.eval_intent` prints the same figures for the shipped head.",
        f"Model: {h.embedder} embeddings + tf-idf word uni/bigrams -> class-balanced softmax "
        f"head with a fitted temperature. Train: {files} ({h.n_train} lines, each with one "
        f"ASR-style copy), held-out test: `{h.test_path.name}` ({h.n_test} lines, never used "
        f"for training or model selection). Outside development set (intent-dev): {dev}; the "
        "shipped head never trains on it.",
        "",
        f"## Model selection: {h.folds}-fold stratified CV on the train files (seed {h.seed})",
        "",
        "| l2 | word-feature scale | CV macro-F1 | CV accuracy |",
        "|---|---|---|---|",
        *(f"| {p.l2:g} | {p.word_scale:g} | {m.macro_f1:.3f} | {m.accuracy:.3f} |" for p, m in cv),
        "",
        f"Chosen: l2={best.l2:g}, word-feature scale={best.word_scale:g} "
        f"(CV macro-F1 **{best_cv.macro_f1:.3f}**).",
        "",
    ]


def section(title: str, s: Scored) -> list[str]:
    out = [f"## {title}", "", f"Macro-F1 **{s.all.macro_f1:.3f}**, accuracy {s.all.accuracy:.3f}."]
    if s.clear is not None:
        out.append(
            f"Clear subset: macro-F1 **{s.clear.macro_f1:.3f}**, accuracy {s.clear.accuracy:.3f}."
        )
    out += ["", *metrics_table(s.all), ""]
    if s.clear is not None:
        out += ["Clear subset:", "", *metrics_table(s.clear), ""]
    out += ["Confusion matrix (rows: true label; columns: predicted):", "", *confusion(s.all), ""]
    if s.per_source:
        out += ["| source | accuracy | rows |", "|---|---|---|"]
        out += [f"| {src} | {acc:.3f} | {n} |" for src, acc, n in s.per_source]
        out.append("")
    return out


def _calibration(t: float, own: Scored, outside: Sequence[tuple[Scored, FloatArray]]) -> list[str]:
    rows = [f"| {own.name} | {own.ece:.3f} |"]
    rows += [f"| intent-dev, {s.name} | {s.ece:.3f} |" for s, _ in outside]
    return [
        "## Calibration",
        "",
        f"Softmax temperature {t:.2f}, fitted on the out-of-fold logits of the chosen "
        "parameters. Expected calibration error (10 equal-width bins; 0 is perfect):",
        "",
        "| rows | ECE |",
        "|---|---|",
        *rows,
        "",
    ]


def _thresholds(
    name: str, truth: Sequence[str], probs: FloatArray, labels: Sequence[str]
) -> list[str]:
    """Coverage and accuracy on the confident part for a few ``min_confidence`` values."""
    top = probs.max(axis=1)
    hit = np.array([labels[int(i)] == y for i, y in zip(probs.argmax(axis=1), truth, strict=True)])
    out = [
        f"## Confidence cut-off ({name})",
        "",
        "With `deck.min_confidence = t` (or `IntentOptions.min_confidence`), only predictions "
        "at t or above count.",
        "",
        "| t | share kept | accuracy of kept |",
        "|---|---|---|",
    ]
    for t in (0.0, 0.3, 0.4, 0.5, 0.6, 0.7):
        keep = top >= t
        acc = float(hit[keep].mean()) if keep.any() else 0.0
        out.append(f"| {t:.1f} | {float(keep.mean()):.3f} | {acc:.3f} |")
    return [*out, ""]


def metrics_table(m: Metrics) -> list[str]:
    lines = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for lab, v in m.per_label.items():
        lines.append(f"| {lab} | {v.precision:.3f} | {v.recall:.3f} | {v.f1:.3f} | {v.support} |")
    total = sum(v.support for v in m.per_label.values())
    lines.append(f"| **macro** | | | **{m.macro_f1:.3f}** | {total} |")
    return lines


def confusion(m: Metrics) -> list[str]:
    short = [lab.replace("objection_", "obj_") for lab in m.labels]
    lines = ["| true \\ predicted | " + " | ".join(short) + " |", "|---" * (len(short) + 1) + "|"]
    for lab, row in zip(short, m.confusion, strict=True):
        lines.append(f"| {lab} | " + " | ".join(str(v) if v else "." for v in row) + " |")
    return lines


def _sentiment(
    train: Sequence[Example], test: Sequence[Example], labels: Sequence[str], probs: FloatArray
) -> list[str]:
    truth = [target_of(e) for e in test]
    valence = valence_from_examples(train)
    ours = list(probs @ np.array([valence.get(lab, 0.0) for lab in labels]))
    vader = lexicon_baseline([e.text for e in test])
    vader_cell = (
        f"{polarity_accuracy(vader, truth):.3f}"
        if vader is not None
        else "not installed (`pip install vaderSentiment`)"
    )
    return [
        "## Sentiment polarity (held-out)",
        "",
        "Polarity (negative <= -0.25 < neutral < 0.25 <= positive) against each line's "
        "`sentiment` (or its label's valence).",
        "",
        "| scorer | polarity accuracy |",
        "|---|---|",
        f"| Cuecard (intent-valence) | {polarity_accuracy(ours, truth):.3f} |",
        f"| VADER (generic lexicon) | {vader_cell} |",
        "",
    ]
