"""The one place wall-clock time is read: latency stamps, call start and end times, webhook
timestamps, the retention cut-off.

Stores, webhooks and the app take a ``Clock`` (``SystemClock()`` by default); tests pass a
``ManualClock`` and move it by hand instead of patching ``time``.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock epoch seconds."""


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that reads what it was set to: tests, and replays that must be reproducible."""

    def __init__(self, now: float = 0.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def call_date_of(started_at: float) -> date:
    """The call's local calendar date (the server's time zone): what "by Friday" counts from."""
    return datetime.fromtimestamp(started_at).date()
