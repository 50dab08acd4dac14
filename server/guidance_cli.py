"""``cuecard check-playbook`` and ``cuecard train-score``: the guidance package's commands."""

from __future__ import annotations

import argparse
import sys

from guidance.errors import GuidanceError, HistoryError, PlaybookError
from guidance.playbook import ALERT_KINDS, INTENT_CARD_KINDS, load_playbook
from guidance.score import write_score_model
from guidance.train import load_history, report, train


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``check-playbook [FILE]`` and ``train-score HISTORY.jsonl [--out FILE] [--l2 X]
    [--folds K]``."""
    p = subparsers.add_parser("check-playbook", help="validate a playbook YAML file")
    p.add_argument("file", nargs="?", default=None, help="playbook file (default: packaged)")
    p.set_defaults(handler=check_playbook)

    p = subparsers.add_parser(
        "train-score", help="refit the lead-score coefficients from past calls with outcomes"
    )
    p.add_argument("history", help="JSON lines: one past call per line with outcome won/lost")
    p.add_argument("--out", default="score_coefficients.json", help="coefficients file to write")
    p.add_argument("--l2", type=float, default=3.0, help="L2 penalty on standardised weights")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    p.set_defaults(handler=train_score)


def check_playbook(args: argparse.Namespace) -> int:
    """Exit status 0 when the playbook loads, 2 with the error on stderr when it does not."""
    try:
        playbook = load_playbook(args.file)
    except PlaybookError as e:
        print(e, file=sys.stderr)
        return 2
    print(
        f"playbook ok: {len(INTENT_CARD_KINDS)} intent cards, {len(ALERT_KINDS)} alerts, "
        f"{len(playbook.competitors)} battlecards ({', '.join(playbook.competitors)}), "
        f"{len(playbook.question_topics)} question topics"
    )
    return 0


def train_score(args: argparse.Namespace) -> int:
    """Exit 0 after writing ``--out``; 2 with a clear message for a bad history file."""
    try:
        if args.folds < 2:
            raise HistoryError("--folds must be at least 2")
        model = train(load_history(args.history), l2=args.l2, folds=args.folds, seed=args.seed)
    except GuidanceError as e:
        print(f"train-score: {e}", file=sys.stderr)
        return 2
    write_score_model(model, args.out)
    print(report(model))
    print(f"wrote {args.out}")
    return 0
