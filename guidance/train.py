"""``cuecard train-score HISTORY.jsonl``: refit the lead-score coefficients from past calls.

A history line is one past call::

    {"call_id": "c-1", "outcome": "won" | "lost",
     "prior": {"company_size": 120, "industry": "software", ...},      (optional)
     "features": {"buying_signals": 2, "objections": 1, ...}}          (raw call features)

``features`` holds the raw conversation features named in ``guidance.score`` (what
``LeadScore.conversation_features()`` returns at the end of a call; missing ones count as 0).
The fit is an L2-regularised logistic regression (Newton's method on standardised features, in
numpy). It reports k-fold cross-validated AUC and a calibration table of the out-of-fold
predictions, then refits on all calls and writes a coefficients file ``load_score_model`` reads.
Categorical prior levels seen in fewer than ``MIN_LEVEL_COUNT`` calls get no weight of their own.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from guidance.errors import HistoryError, PriorError
from guidance.score import (
    CONVERSATION_FEATURES,
    FeatureSpec,
    ScoreModel,
    feature_vector,
    parse_prior,
)

MIN_LEVEL_COUNT = 5
Matrix = npt.NDArray[np.float64]

# What each conversation feature means, and the words a rep sees when it moves the score.
FEATURE_TEXT: dict[str, tuple[str, str, str]] = {
    "buying_signals": ("Customer buying signals, count (capped at 6)", "buying signal", ""),
    "objections": ("Customer objections of any type, count (capped at 6)", "objection", ""),
    "objections_addressed": (
        "Objections the rep answered within 20 s with 8+ words, count (capped at 6)",
        "you answered an objection",
        "",
    ),
    "questions": ("Customer questions, count (capped at 6)", "customer question", ""),
    "next_steps": ("Next steps proposed or agreed, count (capped at 6)", "next step", ""),
    "competitor_mentions": (
        "Competitor names the customer mentioned, count (capped at 6)",
        "competitor mentioned",
        "",
    ),
    "customer_sentiment": (
        "Smoothed sentiment of the customer's words, -1..1",
        "customer sounds more positive",
        "customer sounds less positive",
    ),
    "customer_engagement": (
        "Smoothed prosodic engagement of the customer's voice, -1..1",
        "customer sounds more engaged",
        "customer sounds less engaged",
    ),
    "rep_talk_share_over_half": (
        "Rep's share of the talk so far minus 0.5",
        "you are talking more than the customer",
        "the customer is talking more",
    ),
}


@dataclass(frozen=True, slots=True)
class History:
    rows: list[dict[str, float]]
    won: npt.NDArray[np.float64]


def load_history(path: str | Path) -> History:
    """Parse a history file; ``HistoryError`` naming the line of the first bad record."""
    rows: list[dict[str, float]] = []
    won: list[float] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise HistoryError(f"history {path}: cannot read: {e.strerror}") from e
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            outcome = rec["outcome"]
            if outcome not in ("won", "lost"):
                raise ValueError(f"outcome must be 'won' or 'lost', got {outcome!r}")
            features = rec.get("features", {})
            unknown = set(features) - set(CONVERSATION_FEATURES)
            if unknown:
                raise ValueError(f"unknown features {sorted(unknown)}")
            conv = {k: float(v) for k, v in features.items()}
            rows.append(feature_vector(conv, parse_prior(rec.get("prior"))))
            won.append(1.0 if outcome == "won" else 0.0)
        except (ValueError, KeyError, TypeError, PriorError) as e:
            raise HistoryError(f"history {path} line {n}: {e}") from e
    if len(set(won)) < 2 or len(won) < 20:
        raise HistoryError(f"history {path}: need at least 20 calls with both outcomes")
    return History(rows, np.asarray(won))


def columns(rows: list[dict[str, float]]) -> list[str]:
    """Conversation features always; prior columns seen in at least ``MIN_LEVEL_COUNT`` rows."""
    seen = Counter(k for r in rows for k in r if k.startswith("prior."))
    prior = sorted(k for k, c in seen.items() if c >= MIN_LEVEL_COUNT)
    return [*CONVERSATION_FEATURES, *prior]


def design(rows: list[dict[str, float]], names: list[str]) -> Matrix:
    return np.array([[r.get(n, 0.0) for n in names] for r in rows], dtype=np.float64)


def fit_logistic(x: Matrix, y: Matrix, l2: float) -> tuple[float, Matrix]:
    """Intercept and weights on the raw scale; the L2 penalty applies to standardised weights."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    xs = np.hstack([np.ones((len(x), 1)), (x - mean) / std])
    w = np.zeros(xs.shape[1])
    penalty = np.full(xs.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(xs @ w, -50, 50)))
        grad = xs.T @ (p - y) + penalty * w
        hess = (xs.T * (p * (1 - p))) @ xs + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    weights = w[1:] / std
    return float(w[0] - np.sum(weights * mean)), weights


def auc(y: Matrix, p: Matrix) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half)."""
    pos, neg = p[y == 1], p[y == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def fold_indices(n: int, folds: int, seed: int) -> list[npt.NDArray[np.int64]]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[k::folds] for k in range(folds)]


def cross_validate(x: Matrix, y: Matrix, l2: float, folds: int, seed: int) -> Matrix:
    """Out-of-fold predicted win probabilities from ``folds``-fold cross-validation."""
    out = np.zeros(len(y))
    for test in fold_indices(len(y), folds, seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        b, w = fit_logistic(x[train], y[train], l2)
        out[test] = 1.0 / (1.0 + np.exp(-(b + x[test] @ w)))
    return out


def calibration(y: Matrix, p: Matrix, bins: int = 10) -> list[dict[str, float]]:
    """Reliability table: calls grouped by predicted-probability decile."""
    order = np.argsort(p)
    table = []
    for chunk in np.array_split(order, bins):
        if len(chunk):
            table.append(
                {
                    "n": len(chunk),
                    "predicted": round(float(p[chunk].mean()), 3),
                    "observed": round(float(y[chunk].mean()), 3),
                }
            )
    return table


def train(history: History, l2: float = 3.0, folds: int = 5, seed: int = 0) -> ScoreModel:
    names = columns(history.rows)
    x, y = design(history.rows, names), history.won
    oof = cross_validate(x, y, l2, folds, seed)
    fold_aucs = [auc(y[test], oof[test]) for test in fold_indices(len(y), folds, seed)]
    intercept, weights = fit_logistic(x, y, l2)
    features: dict[str, FeatureSpec] = {}
    for name, w in zip(names, weights, strict=True):
        desc, up, down = FEATURE_TEXT.get(name, (f"CRM {name.removeprefix('prior.')}", name, name))
        features[name] = FeatureSpec(float(w), desc, up or name, down or name)
    brier = float(np.mean((oof - y) ** 2))
    training = {
        "calls": len(y),
        "won": int(y.sum()),
        "l2": l2,
        "folds": folds,
        "cv_auc": round(auc(y, oof), 4),
        "cv_auc_per_fold": [round(a, 4) for a in fold_aucs],
        "cv_brier": round(brier, 4),
        "calibration": calibration(y, oof),
    }
    return ScoreModel(intercept, features, training)


def report(model: ScoreModel) -> str:
    t: dict[str, Any] = model.training
    lines = [
        f"calls: {t['calls']} (won {t['won']})  l2: {t['l2']}",
        f"cross-validated AUC ({t['folds']} folds): {t['cv_auc']:.3f}  "
        f"per fold: {', '.join(f'{a:.3f}' for a in t['cv_auc_per_fold'])}  "
        f"Brier: {t['cv_brier']:.3f}",
        "calibration (out-of-fold, by predicted decile):  n  predicted  observed",
    ]
    lines += [
        f"  {r['n']:>4}  {r['predicted']:>8.3f}  {r['observed']:>8.3f}" for r in t["calibration"]
    ]
    lines.append(f"intercept {model.intercept:+.3f}; weights:")
    ranked = sorted(model.features.items(), key=lambda kv: -abs(kv[1].weight))
    lines += [f"  {w.weight:+.3f}  {name}" for name, w in ranked]
    return "\n".join(lines)
