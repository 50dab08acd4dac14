"""Training and evaluation of the intent head: ``cuecard train-intent`` and ``bench.eval_intent``.

Protocol (fixed seeds: same data, same head, same report):

1. Train files (``nlp/data/intents*.jsonl`` minus the test file) are checked against the
   held-out split for near duplicates (normalised match, token Jaccard >= 0.8 or difflib ratio
   >= 0.88, the test intent-dev's README used); any hit refuses to train.
2. Every train line gets one ASR-style copy (``asr_variant``: lowercase, no punctuation,
   fillers, a repeated or dropped word, homophones). A copy always sits in its original's fold.
3. Head parameters are picked by stratified k-fold CV on the train files only; the out-of-fold
   logits of the chosen parameters fit the softmax temperature (calibrated confidence).
4. The head is scored once on the held-out split and, when an outside development set is given
   (intent-dev TSV), on it in two honest ways: a head trained without any of its rows, and
   leave-one-source-out (train + every other source, predict the left-out source, pooled).
   With ``include_dev`` the shipped head also trains on all dev rows; its figure on those rows
   is never reported.
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlp.intent import (
    Example,
    FloatArray,
    HeadParams,
    IntArray,
    LinearHead,
    SentenceEmbedder,
    fit_temperature,
    softmax,
    stratified_folds,
    train_head,
)

GRID = tuple(HeadParams(l2=l2, word_scale=s) for s in (1.0, 1.5) for l2 in (1e-4, 3e-4))


@dataclass(frozen=True, slots=True)
class DevRow:
    text: str
    label: str
    clear: bool
    source: str  # the corpus it came from, e.g. "SparkBeyond/agentune" or "tatoeba"


def load_dev(path: Path) -> list[DevRow]:
    """Rows of an intent-dev TSV (``label text confidence license source``, no quoting)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [
        DevRow(r["text"], r["label"], r["confidence"] == "clear", source_of(r["source"]))
        for r in rows
    ]


def source_of(locator: str) -> str:
    m = re.match(r"github:([^@:]+)", locator)
    if m:
        return m.group(1)
    return "tatoeba" if "tatoeba.org" in locator else locator.split()[0]


def default_dev_path() -> Path | None:
    """``../shared/intent-dev/utterances.tsv`` next to a source checkout, if it is there."""
    path = Path(__file__).resolve().parents[2] / "shared" / "intent-dev" / "utterances.tsv"
    return path if path.is_file() else None


# ---- data ----------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9']+")
_HOMOPHONES = {
    "to": "too",
    "too": "to",
    "for": "four",
    "your": "you're",
    "you're": "your",
    "their": "there",
    "there": "their",
    "right": "write",
    "know": "no",
    "week": "weak",
    "by": "buy",
    "here": "hear",
    "its": "it's",
    "it's": "its",
    "then": "than",
    "we'll": "will",
}
_FILLERS = ("um", "uh", "like", "you know", "i mean", "so", "yeah")


def normalised(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def asr_variant(text: str, rng: np.random.Generator) -> str:
    """``text`` as a streaming recognizer might give it: lowercase, no punctuation, and one or
    two of a filler, a repeated word, a dropped short word, a homophone. Deterministic per rng."""
    words = normalised(text).split()
    if len(words) < 2:
        return " ".join(words) or text.lower()
    for _ in range(int(rng.integers(1, 3))):
        kind = int(rng.integers(0, 4))
        i = int(rng.integers(0, len(words)))
        if kind == 0:
            words.insert(i, _FILLERS[int(rng.integers(0, len(_FILLERS)))])
        elif kind == 1:
            words.insert(i, words[i])
        elif kind == 2 and len(words) > 3 and len(words[i]) <= 3:
            del words[i]
        else:
            swaps = [j for j, w in enumerate(words) if w in _HOMOPHONES]
            if swaps:
                j = swaps[int(rng.integers(0, len(swaps)))]
                words[j] = _HOMOPHONES[words[j]]
    return " ".join(words)


def near_duplicates(a: Sequence[str], b: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs (x in a, y in b) that are the same utterance up to wording noise."""
    nb = [(y, normalised(y), set(normalised(y).split())) for y in b]
    exact = {n for _, n, _ in nb}
    out = []
    for x in a:
        nx = normalised(x)
        tx = set(nx.split())
        if nx in exact:
            out.append((x, next(y for y, n, _ in nb if n == nx)))
            continue
        for y, ny, ty in nb:
            if tx and ty and len(tx & ty) / len(tx | ty) >= 0.8:
                out.append((x, y))
                break
            m = difflib.SequenceMatcher(None, nx, ny, autojunk=False)
            if m.real_quick_ratio() >= 0.88 and m.quick_ratio() >= 0.88 and m.ratio() >= 0.88:
                out.append((x, y))
                break
    return out


# ---- training ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rows:
    """Texts, labels and embeddings, plus one ASR-style copy of each row (same index)."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]
    x: FloatArray
    aug_texts: tuple[str, ...]
    x_aug: FloatArray

    @classmethod
    def embed(
        cls, embedder: SentenceEmbedder, texts: Sequence[str], labels: Sequence[str], seed: int
    ) -> Rows:
        rng = np.random.default_rng(seed)
        aug = tuple(asr_variant(t, rng) for t in texts)
        x = embedder.embed(list(texts)).astype(np.float64)
        x_aug = embedder.embed(list(aug)).astype(np.float64)
        return cls(tuple(texts), tuple(labels), x, aug, x_aug)

    def take(self, idx: Sequence[int] | IntArray) -> Rows:
        ix = np.asarray(idx, dtype=np.int64)
        pick = ix.tolist()
        return Rows(
            tuple(self.texts[i] for i in pick),
            tuple(self.labels[i] for i in pick),
            self.x[ix],
            tuple(self.aug_texts[i] for i in pick),
            self.x_aug[ix],
        )

    def __add__(self, other: Rows) -> Rows:
        return Rows(
            self.texts + other.texts,
            self.labels + other.labels,
            np.vstack([self.x, other.x]),
            self.aug_texts + other.aug_texts,
            np.vstack([self.x_aug, other.x_aug]),
        )


def fit(rows: Rows, params: HeadParams, *, augment: bool = True) -> LinearHead:
    """A head on ``rows`` (and their ASR-style copies when ``augment``)."""
    if not augment:
        return train_head(rows.x.astype(np.float32), rows.texts, rows.labels, params)
    x = np.vstack([rows.x, rows.x_aug]).astype(np.float32)
    return train_head(
        x, rows.texts + rows.aug_texts, rows.labels + rows.labels, params, vocab_texts=rows.texts
    )


def logits_on(
    head: LinearHead, labels: Sequence[str], x: FloatArray, texts: Sequence[str]
) -> FloatArray:
    """``head``'s logits as columns in ``labels`` order (-inf for labels it never saw)."""
    raw = head.logits(x.astype(np.float32), texts)
    out = np.full((len(texts), len(labels)), -np.inf)
    for j, lab in enumerate(head.labels):
        out[:, labels.index(lab)] = raw[:, j]
    return out


def out_of_fold(
    rows: Rows,
    folds: Sequence[IntArray],
    params: HeadParams,
    labels: Sequence[str],
    *,
    extra: Rows | None = None,
    augment: bool = True,
) -> FloatArray:
    """Logits of each row from a head trained on every other fold (plus ``extra``)."""
    out = np.zeros((len(rows.texts), len(labels)))
    for fold in folds:
        held = set(fold.tolist())
        train = rows.take([i for i in range(len(rows.texts)) if i not in held])
        head = fit(train + extra if extra is not None else train, params, augment=augment)
        part = rows.take(fold)
        out[fold] = logits_on(head, labels, part.x, part.texts)
    return out


def predicted(logits: FloatArray, labels: Sequence[str]) -> list[str]:
    return [labels[int(i)] for i in logits.argmax(axis=1)]


def calibrated(logits: FloatArray, temperature: float) -> FloatArray:
    return softmax(np.where(np.isfinite(logits), logits, -1e9) / temperature)


def temperature_of(logits: FloatArray, truth: Sequence[str], labels: Sequence[str]) -> float:
    y = np.array([labels.index(t) for t in truth], dtype=np.int64)
    return fit_temperature(np.where(np.isfinite(logits), logits, -1e9), y)


def source_folds(sources: Sequence[str]) -> dict[str, IntArray]:
    return {
        s: np.array([i for i, x in enumerate(sources) if x == s], dtype=np.int64)
        for s in sorted(set(sources))
    }


def own_folds(examples: Sequence[Example], k: int, seed: int) -> list[IntArray]:
    return stratified_folds([e.label for e in examples], k, seed)
