"""Events to JSON for the rep's socket, storage and webhooks.

Every wire event is a frozen dataclass with a ``type: ClassVar[str]`` naming it; its fields
hold JSON values, tuples, dicts or nested dataclasses. A field whose metadata says
``wire=False`` (e.g. a transcript's audio) never leaves the process.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

StatusState = Literal["live", "degraded", "ended", "interrupted"]


@dataclass(frozen=True, slots=True)
class Status:
    """The call's state for the rep: live, degraded (a stage failed, the call goes on), ended
    or interrupted."""

    type: ClassVar[str] = "status"

    state: StatusState
    detail: str
    audio_s: float


def to_wire(event: Any) -> dict[str, Any]:
    """The event as a JSON-ready dict with ``type`` first."""
    if not dataclasses.is_dataclass(event) or isinstance(event, type):
        raise TypeError(f"not a wire event: {event!r}")
    out: dict[str, Any] = {"type": type(event).type}  # type: ignore[attr-defined]
    out.update(_fields(event))
    return out


def _fields(obj: Any) -> dict[str, Any]:
    return {
        f.name: _value(getattr(obj, f.name))
        for f in dataclasses.fields(obj)
        if f.metadata.get("wire", True)
    }


def _value(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _fields(v)
    if isinstance(v, tuple | list):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _value(x) for k, x in v.items()}
    if isinstance(v, float):
        return round(v, 4)
    return v


def dumps(event: Any) -> str:
    return json.dumps(to_wire(event), separators=(",", ":"))
