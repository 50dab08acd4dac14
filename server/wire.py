"""The wire contract: every event a call sends to the rep's socket, stores and hands to webhooks.

``WireEvent`` lists them. Each is a frozen dataclass with a ``type: ClassVar[str]`` naming it;
its fields hold JSON values, tuples, dicts or nested dataclasses (``Word``, ``Entity``,
``Prosody``, ``Evidence``, ``Moment``...). A field whose metadata says ``wire=False`` (e.g. a
transcript's audio) never leaves the process.

- ``is_durable(event)``: stored, or only shown (partials, provisional cards).
- ``to_wire(event)``: the JSON-ready dict, ``type`` first, floats rounded to 4 decimals.
- ``from_wire(data)``: a stored or received dict back into its dataclass, nested ones
  included. The ``type`` key picks the class; ``seq`` (added by the store) and keys no field
  names (written by a newer server) are ignored; an unknown ``type`` or a missing or mistyped
  field raises ``WireError``. ``from_wire(to_wire(e)) == e`` for every event whose floats
  have at most 4 decimals.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, create_model

from guidance.cards import Card
from guidance.coach import CardActionRejected
from guidance.errors import describe_validation
from guidance.score import Score
from guidance.summary import Summary
from nlp.insight import Insight
from nlp.transcript import Transcript

# How a call ended: normally, cut off (dropped connection, protocol error, server gone), after
# the peer went silent past a timeout, cut for exceeding a limit (rate, size, capacity), or
# finished by the server's drain (SIGTERM: its utterances final, its summary written).
EndState = Literal["ended", "interrupted", "timed_out", "limit_exceeded", "server_shutdown"]
END_STATES: tuple[EndState, ...] = typing.get_args(EndState)
StatusState = Literal[
    "live", "degraded", "ended", "interrupted", "timed_out", "limit_exceeded", "server_shutdown"
]


@dataclass(frozen=True, slots=True)
class Status:
    """The call's state for the rep: live, degraded (a stage failed, the call goes on), or
    how it ended (``EndState``), ``detail`` saying why."""

    type: ClassVar[str] = "status"

    state: StatusState
    detail: str
    audio_s: float


WireEvent = Transcript | Insight | Card | Score | Status | Summary | CardActionRejected
WIRE_EVENTS: tuple[type[WireEvent], ...] = typing.get_args(WireEvent)


def is_durable(event: WireEvent) -> bool:
    """Whether the event is stored (before anyone sees it) or only shown: partial transcripts
    and their insights, and provisional cards, are shown and never stored."""
    if isinstance(event, Transcript | Insight):
        return event.is_final
    if isinstance(event, Card):
        return not event.provisional
    return True


class WireError(ValueError):
    """A dict that is no valid wire event (unknown ``type``, missing or mistyped field). A
    retry does not help: the data itself is wrong."""


def to_wire(event: WireEvent) -> dict[str, Any]:
    """The event as a JSON-ready dict with ``type`` first."""
    if not isinstance(event, WIRE_EVENTS):
        raise TypeError(f"not a wire event: {event!r}")
    out: dict[str, Any] = {"type": type(event).type}
    out.update(_fields(event))
    return out


def from_wire(data: Mapping[str, Any]) -> WireEvent:
    """The event a wire dict (as ``to_wire`` wrote it, ``seq`` allowed) stands for."""
    kind = data.get("type") if isinstance(data, Mapping) else None
    read = _READERS.get(kind) if isinstance(kind, str) else None
    if read is None:
        raise WireError(f"unknown wire event type {kind!r}")
    try:
        return read(data)
    except ValidationError as err:
        raise WireError(
            f"malformed {kind} event: {describe_validation(err, root='(event)')}"
        ) from err


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


def _reader(cls: type[WireEvent]) -> Callable[[Mapping[str, Any]], WireEvent]:
    """Validation of ``cls`` from its wire dict, nested dataclasses included (pydantic builds
    them). A class with fields that never go on the wire (a transcript's audio, which
    pydantic cannot describe) is validated as a model of its wire fields, then built with
    the others at their defaults."""
    wire = [f for f in dataclasses.fields(cls) if f.metadata.get("wire", True)]
    if len(wire) == len(dataclasses.fields(cls)):
        return TypeAdapter(cls).validate_python
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in wire:
        if f.default is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], f.default)
        elif f.default_factory is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], Field(default_factory=f.default_factory))
        else:
            fields[f.name] = (hints[f.name], ...)
    model = create_model(f"{cls.__name__}Wire", __config__=ConfigDict(extra="ignore"), **fields)
    validate = model.__pydantic_validator__.validate_python

    def read(data: Mapping[str, Any]) -> WireEvent:
        return cls(**validate(data).__dict__)

    return read


_READERS: dict[str, Callable[[Mapping[str, Any]], WireEvent]] = {
    cls.type: _reader(cls) for cls in WIRE_EVENTS
}
