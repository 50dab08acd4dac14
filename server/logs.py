"""The server's log lines: plain text (default) or one JSON object per line
(``CUECARD_LOG_FORMAT=json``), set up once by ``configure`` (``cuecard serve``).

A JSON line carries ``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``, then
``call_id`` and ``rep_id`` when the line is about a call, then any ``extra=`` fields of the
call (``exc`` holds a traceback). The call comes from ``bind_call``: ``CallSession.start``
binds it in the task that opened the call, and every task the call starts inherits it, so the
socket loop's and the pipeline's lines carry it without passing it around. A text line ends
with ``call_id=… rep_id=…`` instead.

No transcript text is logged unless ``CUECARD_LOG_TRANSCRIPTS=1``: a line may carry it only in
its ``transcript`` extra (never in its message), which both formatters leave out unless asked,
and the ``cuecard.transcripts`` logger (one line per final) is off unless asked.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

TRANSCRIPTS = "cuecard.transcripts"  # the logger of the per-final lines
TRANSCRIPT_FIELD = "transcript"

_CALL: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar(
    "cuecard_call", default=None
)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def bind_call(call_id: str, rep_id: str | None) -> None:
    """Log lines of this task, and of the tasks it creates from now on, are about this call."""
    _CALL.set((call_id, rep_id))


def call_fields(record: logging.LogRecord, *, transcripts: bool) -> dict[str, Any]:
    """``call_id`` and ``rep_id`` (the record's own, else the bound call's), then the record's
    extras; the transcript only when ``transcripts``."""
    fields: dict[str, Any] = {}
    bound = _CALL.get()
    call_id = getattr(record, "call_id", None) or (bound[0] if bound else None)
    rep_id = getattr(record, "rep_id", None) or (bound[1] if bound else None)
    if call_id is not None:
        fields["call_id"] = call_id
    if rep_id is not None:
        fields["rep_id"] = rep_id
    for key, value in record.__dict__.items():
        if key in _STANDARD or key in fields or key.startswith("_"):
            continue
        if key == TRANSCRIPT_FIELD and not transcripts:
            continue
        fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    def __init__(self, *, transcripts: bool = False) -> None:
        super().__init__()
        self.transcripts = transcripts

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(call_fields(record, transcripts=self.transcripts))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, then the call's fields as ``key=value``."""

    def __init__(self, *, transcripts: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.transcripts = transcripts

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = call_fields(record, transcripts=self.transcripts)
        if not fields:
            return text
        head, sep, tail = text.partition("\n")  # fields before a traceback, on the first line
        pairs = " ".join(
            f"{k}={v}" if k != TRANSCRIPT_FIELD else f"{k}={v!r}" for k, v in fields.items()
        )
        return f"{head}  {pairs}{sep}{tail}"


def configure(
    log_format: str = "text",
    *,
    transcripts: bool = False,
    verbose: bool = False,
    stream: TextIO | None = None,
) -> None:
    """The root logger's one handler, on ``stream`` (stderr): ``log_format`` text or json."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    handler.setFormatter(formatter(transcripts=transcripts))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    logging.getLogger(TRANSCRIPTS).setLevel(logging.INFO if transcripts else logging.CRITICAL)
