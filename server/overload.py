"""``OverloadWatch``: whether the rep should be told the server is shedding live partials.

The recognizer sheds partials first under load (``nlp.scheduler``: a pending partial is
replaced by a newer one, a running partial batch is cut short by a final). One dropped partial
is routine (a final that preempts one); when most of a call's partials are lost, the rep's
live transcript has stalled. Sans-I/O, with hysteresis so the page does not flap. Within
``window_s``, the call is *shedding* when at least ``enter_drops`` of its partials were lost
and, if the caller also passes the partials that were decoded, at least ``min_lost_share`` of
all its partials were:

- ``degraded`` once it is shedding;
- ``live`` again once ``calm_s`` passed without a loss while shedding.

Time is whatever the caller passes (the session passes the call's audio seconds, at its ticks);
the counts are running totals, so what came before the first ``observe`` does not count. The
session passes its own call's counts (``nlp.asr.StreamStats``), not the shared scheduler's
total: with eight calls on the server, the routine replacements of all of them added up to a
"server busy" on every page at half the recognizer's capacity; and four calls still lost one
partial in four at half capacity (the live line updates a little less often), which is no
stall either.
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
    min_lost_share: float = 0.5

    def __post_init__(self) -> None:
        if self.enter_drops < 1 or self.window_s <= 0 or self.calm_s <= 0:
            raise ValueError("enter_drops >= 1, window_s > 0 and calm_s > 0")
        if not 0 < self.min_lost_share <= 1:
            raise ValueError("min_lost_share must be within (0, 1]")


class OverloadWatch:
    def __init__(self, options: OverloadOptions | None = None) -> None:
        self.options = options or OverloadOptions()
        self.degraded = False
        self._totals: tuple[int, int] | None = None  # (lost, kept) at the last look
        # (time, lost, kept) since the previous look, within the window
        self._seen: deque[tuple[float, int, int]] = deque()
        self._last_shedding_s = 0.0

    def observe(
        self, dropped_total: int, now_s: float, kept_total: int | None = None
    ) -> Shift | None:
        """The call's lost-partials total (and, optionally, decoded-partials total) at ``now_s``;
        the shift it causes, if any. Without ``kept_total`` only the count of losses counts."""
        kept = 0 if kept_total is None else kept_total
        lost_new = 0
        if self._totals is not None:
            lost_new = max(0, dropped_total - self._totals[0])
            kept_new = max(0, kept - self._totals[1])
            if lost_new or kept_new:
                self._seen.append((now_s, lost_new, kept_new))
        self._totals = (dropped_total, kept)
        while self._seen and self._seen[0][0] <= now_s - self.options.window_s:
            self._seen.popleft()
        lost = sum(n for _, n, _ in self._seen)
        total = lost + sum(n for _, _, n in self._seen)
        shedding = lost >= self.options.enter_drops and (
            kept_total is None or lost >= self.options.min_lost_share * total
        )
        if shedding and lost_new:
            self._last_shedding_s = now_s  # a loss while shedding: the calm starts again
        if not self.degraded and shedding:
            self.degraded = True
            self._last_shedding_s = now_s
            return "degraded"
        if self.degraded and now_s - self._last_shedding_s >= self.options.calm_s:
            self.degraded = False
            self._seen.clear()
            return "live"
        return None
