"""The one place wall-clock time is read: latency stamps and call start times."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock epoch seconds."""


class SystemClock:
    def now(self) -> float:
        return time.time()
