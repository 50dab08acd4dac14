"""The ``CallStore`` seam: where every call and everything it produced is kept.

Contract: ``append`` returns only once the event is durable (committed); the session calls it
before it publishes the event to any viewer, so nothing shown can be lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

CallStatus = Literal["live", "ended", "interrupted"]


@dataclass(frozen=True, slots=True)
class CallMeta:
    call_id: str
    source: Literal["native", "twilio", "webrtc", "file"]
    rep_id: str | None = None
    started_at: float = 0.0  # wall-clock epoch seconds, from the server's Clock
    prior: dict[str, Any] = field(default_factory=dict)  # CRM fields for the lead score


class CallStore(Protocol):
    async def open_call(self, meta: CallMeta) -> None:
        """Create the call (status ``live``), or reopen it for a reconnecting stream."""

    async def append(self, call_id: str, event: dict[str, Any]) -> int:
        """Store one wire event; returns its sequence number once it is durable."""

    async def close_call(self, call_id: str, status: CallStatus) -> None: ...

    async def events(self, call_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """The call's stored events in order, each with its ``seq``."""

    async def close(self) -> None: ...
