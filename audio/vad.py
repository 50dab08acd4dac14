"""The ``SpeechDetector`` seam: speech probability of fixed-size 16 kHz frames.

A detector is stateful (Silero carries an RNN state between frames): give each channel its
own instance from a ``DetectorFactory``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from audio.chunk import Samples


class SpeechDetector(Protocol):
    name: str
    frame_samples: int

    def probability(self, frame: Samples) -> float:
        """Speech probability in [0, 1] of the next ``frame_samples`` samples of this stream."""

    def reset(self) -> None: ...


DetectorFactory = Callable[[], SpeechDetector]
