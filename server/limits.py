"""What a peer may send, as sans-I/O pieces every socket loop shares (no clock here: the
caller passes the time, so tests inject it).

- ``valid_call_id(call_id)``: 1-128 ASCII characters of ``[A-Za-z0-9._-]``, never ``.`` or
  ``..`` (a call id becomes a path segment and a store key); checked before any work.
- ``TokenBucket``: a rate with a burst.
- ``InputGuard``: one socket's limits, from ``InputLimits`` (the ``CUECARD_*`` settings): text
  messages at most ``max_text_bytes``; at most ``max_messages_per_s`` messages a second beyond
  a burst of two seconds' worth; audio no faster than ``max_audio_speed`` audio seconds per
  wall second beyond a burst of ``audio_burst_s``. Each breach raises ``LimitExceeded`` with
  the close code and a reason naming the setting.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from server.ingest import MESSAGE_TOO_BIG, POLICY_VIOLATION, LimitExceeded

CALL_ID_MAX = 128
_CALL_ID = re.compile(r"[A-Za-z0-9._-]{1,128}", re.ASCII)
CALL_ID_RULE = "call id must be 1-128 characters of [A-Za-z0-9._-], not '.' or '..'"


def valid_call_id(call_id: object) -> bool:
    return (
        isinstance(call_id, str)
        and _CALL_ID.fullmatch(call_id) is not None
        and call_id not in (".", "..")
    )


@dataclass(slots=True)
class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` banked (the bucket starts full).
    ``take(cost, now_s)`` spends ``cost`` tokens at ``now_s`` (any monotonic seconds), or
    returns False and spends nothing when fewer are left. A cost over the burst passes on a
    full bucket and leaves it in debt, so the long-run rate holds for any message size. A
    rate of 0 is no limit."""

    rate_per_s: float
    burst: float
    _tokens: float = field(init=False)
    _at_s: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s >= 0):
            raise ValueError(f"rate_per_s must be a number >= 0, got {self.rate_per_s}")
        if not (math.isfinite(self.burst) and self.burst > 0):
            raise ValueError(f"burst must be a number > 0, got {self.burst}")
        self._tokens = self.burst

    def take(self, cost: float, now_s: float) -> bool:
        if self.rate_per_s == 0:
            return True
        if self._at_s is not None and now_s > self._at_s:
            self._tokens = min(self.burst, self._tokens + (now_s - self._at_s) * self.rate_per_s)
        if self._at_s is None or now_s > self._at_s:
            self._at_s = now_s  # a clock that steps back refills nothing
        if self._tokens < min(cost, self.burst):
            return False
        self._tokens -= cost
        return True


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_text_bytes: int = 65_536
    max_messages_per_s: float = 200.0  # 0: no limit
    max_audio_speed: float = 1.25  # audio seconds per wall second; 0: no limit
    audio_burst_s: float = 5.0
    text_setting: str = "CUECARD_MAX_TEXT_BYTES"  # named in the reason of a text too long

    def __post_init__(self) -> None:
        if self.max_text_bytes < 1:
            raise ValueError("max_text_bytes must be >= 1")
        TokenBucket(self.max_messages_per_s, 1.0)  # validates the rates
        TokenBucket(self.max_audio_speed, self.audio_burst_s)


class InputGuard:
    """One socket: ``message()`` for every message received, ``audio()`` for the seconds of
    audio each one carried."""

    def __init__(self, limits: InputLimits) -> None:
        self.limits = limits
        rate = limits.max_messages_per_s
        self._messages = TokenBucket(rate, max(2.0 * rate, 1.0))
        self._audio = TokenBucket(limits.max_audio_speed, limits.audio_burst_s)

    def message(self, text_bytes: int | None, now_s: float) -> None:
        """A message arrived at ``now_s``; ``text_bytes``: its UTF-8 size if it is text."""
        cap = self.limits.max_text_bytes
        if text_bytes is not None and text_bytes > cap:
            raise LimitExceeded(
                MESSAGE_TOO_BIG,
                f"text message of {text_bytes} bytes exceeds {cap} ({self.limits.text_setting})",
            )
        if not self._messages.take(1.0, now_s):
            raise LimitExceeded(
                POLICY_VIOLATION,
                f"more than {self.limits.max_messages_per_s:g} messages a second "
                "(CUECARD_MAX_MESSAGES_PER_S)",
            )

    def audio(self, seconds: float, now_s: float) -> None:
        """``seconds`` of the peer's audio arrived at ``now_s``."""
        if seconds > 0 and not self._audio.take(seconds, now_s):
            raise LimitExceeded(
                POLICY_VIOLATION,
                f"audio faster than {self.limits.max_audio_speed:g}x real time beyond a "
                f"{self.limits.audio_burst_s:g} s burst (CUECARD_MAX_AUDIO_SPEED)",
            )
