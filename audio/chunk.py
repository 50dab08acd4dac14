"""Audio values shared by every stage: a chunk of one speaker's 16 kHz audio.

Time is counted in samples at ``SAMPLE_RATE_HZ`` from the first sample of the call;
every later event derives its ``start_s``/``end_s`` from these sample counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

SAMPLE_RATE_HZ = 16_000

Speaker = Literal["rep", "customer", "unknown"]

Samples = npt.NDArray[np.float32]


def samples_to_s(n_samples: int) -> float:
    """Audio time in seconds of a sample count at 16 kHz, rounded to the millisecond."""
    return round(n_samples / SAMPLE_RATE_HZ, 3)


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Mono float32 audio in [-1, 1] at 16 kHz of one speaker, starting at ``start_sample``."""

    speaker: Speaker
    start_sample: int
    samples: Samples = field(repr=False)

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.samples)
