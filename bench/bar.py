"""A one-line progress bar on stderr: what runs now, how far it is, and the time it has taken.

Redrawn in place on a terminal; elsewhere (a log, a pipe) one line per step, at most every
``log_every_s``, so a captured run stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Bar:
    def __init__(self, stream: TextIO = sys.stderr, width: int = 30, log_every_s: float = 10.0):
        self._out = stream
        self._width = width
        self._tty = stream.isatty()
        self._log_every_s = log_every_s
        self._t0 = time.monotonic()
        self._last_log = -log_every_s
        self._label = ""

    def show(self, label: str, done: float) -> None:
        """``done`` in [0, 1] of the step named ``label``."""
        done = min(max(done, 0.0), 1.0)
        filled = int(done * self._width)
        elapsed = time.monotonic() - self._t0
        line = (
            f"[{'#' * filled}{'.' * (self._width - filled)}] {done * 100:5.1f}% "
            f"{label} ({elapsed:.0f} s)"
        )
        if self._tty:
            self._out.write("\r" + line[:120].ljust(120))
        elif label != self._label or elapsed - self._last_log >= self._log_every_s:
            self._out.write(line + "\n")
            self._last_log = elapsed
        self._label = label
        self._out.flush()

    def note(self, text: str) -> None:
        """A line of its own (a finished step's result)."""
        self._out.write(("\r" if self._tty else "") + text.ljust(120 if self._tty else 0) + "\n")
        self._out.flush()
