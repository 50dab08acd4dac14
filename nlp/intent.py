"""Intent of one utterance: the ``IntentClassifier`` seam and its default implementation.

The default is a multinomial logistic regression head over sentence embeddings (any
``SentenceEmbedder``; all-MiniLM-L6-v2 in ``models.minilm`` by default), trained in numpy
from a JSONL data file of ``{"text": ..., "label": ...}`` lines (``nlp/data/intents.jsonl``).
Labels come from the data file, so users can add, drop or rename labels by editing it and
retraining (``cuecard train-intent``). The head is a small ``.npz`` (``nlp/data/intent_head.npz``).

Contracts:
- ``classify`` returns one result per input, in order; ``scores`` hold every label and sum to 1.
- Blank text is never sent to the model: it gets label ``other`` with confidence 0 and all-zero
  scores (there is no evidence for any label).
- A result whose top probability is below ``min_confidence`` is relabelled ``other`` (its scores
  are kept), so a guidance rule never fires on a coin toss.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from nlp.insight import IntentResult

Embeddings = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DATA_DIR = Path(__file__).parent / "data"
FALLBACK_LABEL = "other"


class SentenceEmbedder(Protocol):
    """Texts to unit-length vectors, one row per text. Blocking: call it off the event loop."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Embeddings: ...

    def warmup(self) -> None: ...


class IntentClassifier(Protocol):
    """Utterances to intents. Blocking: call it off the event loop."""

    @property
    def labels(self) -> tuple[str, ...]: ...

    def classify(self, texts: Sequence[str]) -> list[IntentResult]: ...

    def warmup(self) -> None: ...


class DataFileError(ValueError):
    """A training data file is malformed; retrying cannot help, fixing the file can."""


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str
    sentiment: float | None = None  # in [-1, 1]; None: the label's default valence


def load_examples(path: Path) -> list[Example]:
    """Examples of a JSONL file; a malformed line raises ``DataFileError`` naming the line."""
    out: list[Example] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = row["text"], row["label"]
                sentiment = row.get("sentiment")
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataFileError(f"{path}:{n}: need an object with text and label") from exc
            if not isinstance(text, str) or not text.strip() or not isinstance(label, str):
                raise DataFileError(f"{path}:{n}: text and label must be non-empty strings")
            if sentiment is not None and not (
                isinstance(sentiment, int | float) and -1.0 <= sentiment <= 1.0
            ):
                raise DataFileError(f"{path}:{n}: sentiment must be a number in [-1, 1]")
            out.append(
                Example(text.strip(), label, None if sentiment is None else float(sentiment))
            )
    return out


_TOKEN = re.compile(r"[a-z0-9']+")


def _terms(text: str) -> list[str]:
    words = _TOKEN.findall(text.lower())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


@dataclass(frozen=True, slots=True)
class WordFeatures:
    """L2-normalised tf-idf of word unigrams + bigrams over a fixed vocabulary, times ``scale``.

    Sentence embeddings blur the few words that carry a sales intent ("board", "MSA",
    "budget"); these lexical features put them back. Measured in the report: they lift
    held-out macro-F1 by several points over embeddings alone.
    """

    vocab: tuple[str, ...]
    idf: FloatArray = field(repr=False)
    scale: float
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.vocab)})

    @classmethod
    def fit(cls, texts: Sequence[str], *, min_count: int, scale: float) -> WordFeatures:
        df = Counter(t for text in texts for t in set(_terms(text)))
        vocab = tuple(sorted(t for t, c in df.items() if c >= min_count))
        n = len(texts)
        idf = np.array([np.log((1 + n) / (1 + df[t])) + 1.0 for t in vocab])
        return cls(vocab, idf, scale)

    def transform(self, texts: Sequence[str]) -> FloatArray:
        out = np.zeros((len(texts), len(self.vocab)))
        for row, text in enumerate(texts):
            for t in _terms(text):
                i = self._index.get(t)
                if i is not None:
                    out[row, i] += 1.0
        out *= self.idf
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out * self.scale


@dataclass(frozen=True, slots=True)
class LinearHead:
    """Softmax(([embedding, word features] @ weights + bias) / temperature) over ``labels``.

    ``temperature`` is fitted on out-of-fold predictions after training (1.0: uncalibrated),
    so ``confidence`` reads as a probability of being right; it never changes the top label.
    """

    labels: tuple[str, ...]
    words: WordFeatures
    weights: FloatArray = field(repr=False)  # [dim + len(vocab), n_labels]
    bias: FloatArray = field(repr=False)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.weights.ndim != 2 or self.weights.shape[1] != len(self.labels):
            raise ValueError("weights must be [n_features, n_labels]")
        if self.bias.shape != (len(self.labels),):
            raise ValueError("bias must be [n_labels]")
        if not self.temperature > 0:
            raise ValueError("temperature must be > 0")

    def features(self, x: Embeddings, texts: Sequence[str]) -> FloatArray:
        return np.hstack([x.astype(np.float64), self.words.transform(texts)])

    def logits(self, x: Embeddings, texts: Sequence[str]) -> FloatArray:
        """Uncalibrated scores (temperature 1)."""
        out: FloatArray = self.features(x, texts) @ self.weights + self.bias
        return out

    def probabilities(self, x: Embeddings, texts: Sequence[str]) -> FloatArray:
        return softmax(self.logits(x, texts) / self.temperature)

    def with_temperature(self, temperature: float) -> LinearHead:
        return LinearHead(self.labels, self.words, self.weights, self.bias, temperature)

    def save(self, path: Path) -> None:
        np.savez(
            path,
            labels=np.array(self.labels),
            vocab=np.array(self.words.vocab),
            idf=self.words.idf,
            scale=np.array(self.words.scale),
            weights=self.weights.astype(np.float32),
            bias=self.bias,
            temperature=np.array(self.temperature),
        )

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        with np.load(path, allow_pickle=False) as z:
            words = WordFeatures(
                tuple(str(s) for s in z["vocab"]), z["idf"].astype(np.float64), float(z["scale"])
            )
            labels = tuple(str(s) for s in z["labels"])
            temperature = float(z["temperature"]) if "temperature" in z.files else 1.0
            return cls(
                labels,
                words,
                z["weights"].astype(np.float64),
                z["bias"].astype(np.float64),
                temperature,
            )


def softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: FloatArray = e / e.sum(axis=-1, keepdims=True)
    return out


def fit_softmax(
    x: FloatArray,
    y: IntArray,
    n_labels: int,
    *,
    l2: float,
    max_iter: int = 500,
    row_weights: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Multinomial logistic regression by L-BFGS; deterministic (zero init, no sampling).

    Minimises the (row-weighted) mean cross-entropy + ``l2``/2 * |W|^2 (bias unpenalised).
    """
    from scipy import sparse  # scipy ships with librosa, a core dependency
    from scipy.optimize import minimize

    # Sparse: the tf-idf block has a dozen non-zeros per row, so this is ~8x faster than dense.
    xd = sparse.csr_matrix(x.astype(np.float64))
    xt = xd.T.tocsr()
    n, dim = xd.shape
    onehot = np.eye(n_labels)[y]
    rw = np.ones(n) if row_weights is None else row_weights * (n / row_weights.sum())

    def loss(theta: FloatArray) -> tuple[float, FloatArray]:
        w = theta[: dim * n_labels].reshape(dim, n_labels)
        b = theta[dim * n_labels :]
        p = softmax(xd @ w + b)
        ce = -(rw * np.log(np.clip(p[np.arange(n), y], 1e-12, None))).mean()
        g = (p - onehot) * (rw / n)[:, None]
        gw = xt @ g + l2 * w
        return float(ce + 0.5 * l2 * (w * w).sum()), np.concatenate([gw.ravel(), g.sum(0)])

    theta0 = np.zeros(dim * n_labels + n_labels)
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    theta = res.x
    return theta[: dim * n_labels].reshape(dim, n_labels), theta[dim * n_labels :]


@dataclass(frozen=True, slots=True)
class HeadParams:
    l2: float = 1e-4
    word_scale: float = 1.0  # 0 turns the lexical features off
    min_count: int = 2
    balanced: bool = True  # weight rows so that every label weighs the same in the loss


def train_head(
    x: Embeddings,
    texts: Sequence[str],
    labels_of_rows: Sequence[str],
    params: HeadParams,
    *,
    vocab_texts: Sequence[str] | None = None,
) -> LinearHead:
    """A head over the sorted set of labels seen in the rows; deterministic.

    The word vocabulary is fitted on ``vocab_texts`` (default: ``texts``), so augmented copies
    of a line do not turn its one-off words into vocabulary.
    """
    labels = tuple(sorted(set(labels_of_rows)))
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.array([index[lab] for lab in labels_of_rows], dtype=np.int64)
    words = WordFeatures.fit(
        texts if vocab_texts is None else vocab_texts,
        min_count=params.min_count,
        scale=params.word_scale,
    )
    feats = np.hstack([x.astype(np.float64), words.transform(texts)])
    row_weights = None
    if params.balanced:
        counts = np.bincount(y, minlength=len(labels)).astype(np.float64)
        row_weights = 1.0 / counts[y]
    w, b = fit_softmax(feats, y, len(labels), l2=params.l2, row_weights=row_weights)
    return LinearHead(labels, words, w, b)


def fit_temperature(logits: FloatArray, y: IntArray) -> float:
    """The T in [0.05, 20] minimising the cross-entropy of softmax(logits / T) (held-out rows)."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        p = softmax(logits / np.exp(log_t))
        return float(-np.log(np.clip(p[rows, y], 1e-12, None)).mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def expected_calibration_error(
    confidence: FloatArray, correct: FloatArray, bins: int = 10
) -> float:
    """ECE: the support-weighted mean |accuracy - mean confidence| over equal-width bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(float(correct[sel].mean()) - float(confidence[sel].mean()))
    return total / max(len(confidence), 1)


@dataclass(frozen=True, slots=True)
class IntentOptions:
    head_path: Path = DATA_DIR / "intent_head.npz"
    min_confidence: float = 0.0  # below it the label becomes ``other``; measured in the report
    max_chars: int = 2000  # longer text is cut before tokenizing (the model reads 128 tokens)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_confidence < 1.0:
            raise ValueError("min_confidence must be in [0, 1)")
        if self.max_chars < 1:
            raise ValueError("max_chars must be >= 1")


class EmbeddingIntentClassifier:
    """``IntentClassifier`` = a ``SentenceEmbedder`` + a trained ``LinearHead``."""

    def __init__(self, embedder: SentenceEmbedder, head: LinearHead, options: IntentOptions):
        self._embedder = embedder
        self._head = head
        self._options = options

    @classmethod
    def load(cls, embedder: SentenceEmbedder, options: IntentOptions) -> EmbeddingIntentClassifier:
        if not options.head_path.is_file():
            raise FileNotFoundError(
                f"intent head {options.head_path} is missing; train it with `cuecard train-intent`"
            )
        return cls(embedder, LinearHead.load(options.head_path), options)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._head.labels

    def warmup(self) -> None:
        self._embedder.warmup()
        self.classify(["warm up"])

    def classify(self, texts: Sequence[str]) -> list[IntentResult]:
        cleaned = [t.strip()[: self._options.max_chars] for t in texts]
        todo = [i for i, t in enumerate(cleaned) if t]
        results: list[IntentResult] = [self._empty() for _ in cleaned]
        if todo:
            batch = [cleaned[i] for i in todo]
            probs = self._head.probabilities(self._embedder.embed(batch), batch)
            for row, i in enumerate(todo):
                results[i] = self._result(probs[row])
        return results

    def _result(self, p: FloatArray) -> IntentResult:
        scores = {lab: float(v) for lab, v in zip(self._head.labels, p, strict=True)}
        top = int(np.argmax(p))
        label = self._head.labels[top]
        if p[top] < self._options.min_confidence:
            label = FALLBACK_LABEL
        return IntentResult(label=label, confidence=float(p[top]), scores=scores)

    def _empty(self) -> IntentResult:
        return IntentResult(FALLBACK_LABEL, 0.0, {lab: 0.0 for lab in self._head.labels})


@dataclass(frozen=True, slots=True)
class LabelMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class Metrics:
    """Per-label P/R/F1 and the confusion matrix (rows: true label, columns: predicted)."""

    labels: tuple[str, ...]
    per_label: dict[str, LabelMetrics]
    confusion: tuple[tuple[int, ...], ...]

    @property
    def macro_f1(self) -> float:
        return float(np.mean([m.f1 for m in self.per_label.values()]))

    @property
    def accuracy(self) -> float:
        total = sum(sum(row) for row in self.confusion)
        return sum(self.confusion[i][i] for i in range(len(self.labels))) / max(total, 1)


def score_predictions(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> Metrics:
    index = {lab: i for i, lab in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(truth, predicted, strict=True):
        cm[index[t], index[p]] += 1
    per: dict[str, LabelMetrics] = {}
    for i, lab in enumerate(labels):
        tp, col, row = int(cm[i, i]), int(cm[:, i].sum()), int(cm[i, :].sum())
        prec = tp / col if col else 0.0
        rec = tp / row if row else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[lab] = LabelMetrics(prec, rec, f1, row)
    return Metrics(tuple(labels), per, tuple(tuple(int(v) for v in r) for r in cm))


def stratified_folds(labels_of_rows: Sequence[str], k: int, seed: int) -> list[IntArray]:
    """``k`` disjoint index sets covering every row, each label spread evenly across folds."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for lab in sorted(set(labels_of_rows)):
        rows = [i for i, x in enumerate(labels_of_rows) if x == lab]
        for j, i in enumerate(rng.permutation(rows)):
            folds[(offset + j) % k].append(int(i))
        offset += len(rows)
    return [np.array(sorted(f), dtype=np.int64) for f in folds]
