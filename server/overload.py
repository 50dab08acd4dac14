"""``OverloadWatch``: whether the rep should be told the server is shedding live partials.

The recognizer sheds partials first under load (``nlp.scheduler``: a pending partial is
replaced by a newer one, a running partial batch is cut short by a final). One dropped partial
is routine (a final that preempts one); a run of them means the rep's live transcript has
stalled. Sans-I/O, with hysteresis so the page does not flap:

- ``degraded`` once ``enter_drops`` partials were dropped within ``window_s``;
- ``live`` again once ``calm_s`` passed without a drop.

Time is whatever the caller passes (the session passes the call's audio seconds, at its ticks);
the drop count is a running total, so drops before the first ``observe`` do not count. The
session passes its own call's lost partials (``nlp.asr.StreamStats``), not the shared
scheduler's total: with eight calls on the server, the routine replacements of all of them
added up to a "server busy" on every page at half the recognizer's capacity.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

Shift = Literal["degraded", "live"]


@dataclass(frozen=True, slots=True)
class OverloadOptions:
    enter_drops: int = 4
    window_s: float = 10.0
    calm_s: float = 10.0

    def __post_init__(self) -> None:
        if self.enter_drops < 1 or self.window_s <= 0 or self.calm_s <= 0:
            raise ValueError("enter_drops >= 1, window_s > 0 and calm_s > 0")


class OverloadWatch:
    def __init__(self, options: OverloadOptions | None = None) -> None:
        self.options = options or OverloadOptions()
        self.degraded = False
        self._total: int | None = None
        self._drops: deque[tuple[float, int]] = deque()  # (time, drops then) within the window
        self._last_drop_s = 0.0

    def observe(self, dropped_total: int, now_s: float) -> Shift | None:
        """The scheduler's dropped-partials total at ``now_s``; the shift it causes, if any."""
        new = 0 if self._total is None else max(0, dropped_total - self._total)
        self._total = dropped_total
        if new:
            self._drops.append((now_s, new))
            self._last_drop_s = now_s
        while self._drops and self._drops[0][0] <= now_s - self.options.window_s:
            self._drops.popleft()
        if not self.degraded and sum(n for _, n in self._drops) >= self.options.enter_drops:
            self.degraded = True
            return "degraded"
        if self.degraded and now_s - self._last_drop_s >= self.options.calm_s:
            self.degraded = False
            self._drops.clear()
            return "live"
        return None
