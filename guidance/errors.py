"""Errors of the ``guidance`` package.

Hierarchy::

    GuidanceError                 base; ``retryable`` says whether trying again can help
    ├── PlaybookError             playbook file missing, not YAML, or invalid (fix the file)
    ├── ScoreModelError           coefficients file missing or malformed (fix or retrain it)
    ├── PriorError                CRM prior with unknown fields or wrong types (the call goes on
    │                             without a prior)
    ├── CardActionError           a rep's card action names no known card or is malformed
    └── HistoryError              a ``train-score`` history file cannot be used

None of these is retryable: each is a problem with input that the same input will repeat.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import ValidationError


class GuidanceError(Exception):
    retryable: ClassVar[bool] = False


class PlaybookError(GuidanceError):
    """The message names the file, the field path and what is wrong with it."""


class ScoreModelError(GuidanceError):
    pass


class PriorError(GuidanceError):
    """The message names each bad field and why; the session shows it and scores without a prior."""


class CardActionError(GuidanceError):
    pass


class HistoryError(GuidanceError):
    """The message names the file and the line number."""


def describe_validation(
    error: ValidationError, *, root: str = "(top level)", limit: int = 1, inputs: bool = False
) -> str:
    """The one wording of a pydantic error in every message Cuecard writes: ``path: what is
    wrong`` for the first ``limit`` problems (``root`` names an empty path), then ``(and N
    more)``; with ``inputs``, each problem also says what it got."""
    problems = [
        f"{'.'.join(str(p) for p in item['loc']) or root}: {item['msg']}"
        + (f" (got {item['input']!r})" if inputs else "")
        for item in error.errors(include_url=False)
    ]
    more = len(problems) - limit
    return "; ".join(problems[:limit]) + (f" (and {more} more)" if more > 0 else "")
