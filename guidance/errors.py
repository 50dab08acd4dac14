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
